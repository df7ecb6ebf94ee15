"""The adapters: the command lines (train, analyze, report_cli), the config checks (config), a run's views
from its recorded config (run_views), and the Lightning and Hydra callbacks (callbacks/). They call the
library layers below them; nothing below imports them."""
