use dref::distributed;

#[distributed]
#[derive(Clone)]
enum Mode {
    Fast,
    Slow,
}

fn main() {}
