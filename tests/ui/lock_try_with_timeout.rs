#[dref::lock("daily-report", try, timeout = "5s")]
async fn daily_report() -> dref::Result<()> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
