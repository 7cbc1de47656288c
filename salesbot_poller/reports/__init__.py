"""Reports for people, read from the store: the daily digest, the weekly team report and its
chart, the team's figures, the budget notice, and the bot's answers. Not on a call's path:
the pipeline never imports from here."""
