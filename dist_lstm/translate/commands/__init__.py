"""The `dist-lstm` commands on trained models, one module per command: translate,
evaluate, tune-search, serve, average, export. Each adds its own subparser
(`add_command`) and runs it (`run`); the search arguments they share, and reading them
into a model and search options, are options.py's. dist_lstm/cli.py puts them in one
command tree."""
