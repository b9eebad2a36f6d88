# sbuild's own set-up and tear-down of one build's chroot, timed: what Sbuild::Build's
# run_chroot_session does before and after a build, and nothing else.
#
#   perl bench/sbuild_setup.pl MODE DIST CHROOT RUNS [bare]
#
# MODE is sbuild's chroot mode (unshare, or schroot with $ROOST_SCHROOT as the schroot
# program). With "bare", sbuild's own commands in the new chroot (_setup_options: the
# build directory, its group, debconf) are skipped: what is left is the session made
# ready (schroot mode) or the tarball unpacked (unshare mode). Prints one line per run:
# seconds to set up, seconds to tear down.
use strict;
use warnings;
use Time::HiRes qw(time);
use Sbuild::Conf;

my ($mode, $dist, $chroot, $runs, $bare) = @ARGV;
my $conf = Sbuild::Conf::new();
$conf->set('CHROOT_MODE', $mode);
$conf->set('SCHROOT', $ENV{'ROOST_SCHROOT'}) if $mode eq 'schroot' && $ENV{'ROOST_SCHROOT'};
my $info_class = $mode eq 'unshare' ? 'Sbuild::ChrootInfoUnshare' : 'Sbuild::ChrootInfoSchroot';
eval "require $info_class" or die $@;
if (defined $bare && $bare eq 'bare') {
    no warnings 'redefine';
    *Sbuild::Chroot::_setup_options = sub { return 1; };
}
for (1 .. $runs) {
    my $t0 = time;
    my $info = $info_class->new($conf);
    my $session = $info->create('chroot', $dist, $chroot, $conf->get('BUILD_ARCH'))
        or die "sbuild finds no chroot $chroot\n";
    $session->begin_session or die "begin_session failed\n";
    my $t1 = time;
    $session->end_session;
    my $t2 = time;
    printf "%.6f %.6f\n", $t1 - $t0, $t2 - $t1;
}
