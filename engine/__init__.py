"""sdbot's GPU side: model loading and image generation, run as a child process of the bot."""
