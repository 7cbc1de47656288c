"""The command line: the commands, backfill, demo, the daemon shell, systemd notifications."""
