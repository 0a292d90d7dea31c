#[derive(Debug)]
struct Error;

impl From<dref::Error> for Error {
    fn from(_: dref::Error) -> Self {
        Error
    }
}

#[dref::lock("daily-report")]
fn daily_report() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
