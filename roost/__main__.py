from roost.main import launch

launch()
