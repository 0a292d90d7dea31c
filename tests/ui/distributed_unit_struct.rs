use dref::distributed;

#[distributed]
#[derive(Clone)]
struct Marker;

fn main() {}
