"""Code: tree-sitter parsing into a universal AST schema, and sandboxed execution."""
