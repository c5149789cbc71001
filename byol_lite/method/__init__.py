"""The method the book teaches: views, encoder, heads, the BYOL model and loss, its optimiser, its diagnostics,
its diagram."""
