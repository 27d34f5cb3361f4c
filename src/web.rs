//! actix-web applications on a pre-forked pool (the `web` feature).
