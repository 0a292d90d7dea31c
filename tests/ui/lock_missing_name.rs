#[dref::lock]
async fn daily_report() -> dref::Result<()> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
