"""sdbot's Discord side: settings, commands, fair queue, job store and delivery. Never imports torch."""
