use dref::distributed;

#[distributed]
#[derive(Clone)]
struct Worker {
    name: String,
    #[dref(skip, rename = "cache")]
    cache: Vec<u8>,
}

fn main() {}
