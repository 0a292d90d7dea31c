#[dref::lock("daily-report")]
struct Report;

fn main() {}
