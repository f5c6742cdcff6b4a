"""The one-machine stack for development, demos and tests: broker, storage, launcher,
supervisor, simulator, replay, demo."""
