from roost.main import main

raise SystemExit(main())
