"""One module per external service: amoCRM, OpenAI speech and analysis, Telegram, recordings,
audio, and the throttles."""
