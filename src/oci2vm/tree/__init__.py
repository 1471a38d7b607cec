"""The flattened tree every later stage edits: the model, what it holds as an operating
system, and the editor preparation steps use."""
