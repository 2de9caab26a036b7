"""The built-in blocks, one small module per family; every Block subclass here is registered."""
