use dref::distributed;

#[derive(Clone)]
struct Connection {
    fd: i32,
}

#[distributed]
#[derive(Clone)]
struct Worker {
    name: String,
    #[dref(skip)]
    connection: Connection,
}

fn main() {}
