#[derive(Debug)]
struct ReportError;

#[dref::lock("daily-report")]
async fn daily_report() -> Result<(), ReportError> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
