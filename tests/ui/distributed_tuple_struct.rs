use dref::distributed;

#[distributed]
#[derive(Clone)]
struct Point(i32, i32);

fn main() {}
