"""One readable file per training method: its config, its batch, its loss."""
