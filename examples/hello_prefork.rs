//! A hello-world actix-web application on a pre-forked pool.

fn main() {}
