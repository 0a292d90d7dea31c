use dref::distributed;

#[distributed]
#[derive(Clone)]
struct Named<'a> {
    name: &'a str,
}

fn main() {}
