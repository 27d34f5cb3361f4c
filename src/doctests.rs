//! Compiles the code of the README and the book as doctests.
