//! `#[dref::lock]` in its supported forms, with warnings denied.
#![deny(warnings)]

use std::time::Duration;

use dref::{current_fencing_token, Context};

#[derive(Debug)]
enum AppError {
    Dref(dref::Error),
}

impl From<dref::Error> for AppError {
    fn from(e: dref::Error) -> Self {
        AppError::Dref(e)
    }
}

/// Ambient context, `dref::Result`.
#[dref::lock("ambient")]
pub async fn ambient() -> dref::Result<u64> {
    Ok(current_fencing_token().map_or(0, |t| t.0))
}

/// Context from a parameter, custom error, `?` in the body.
#[dref::lock("param")]
async fn param(ctx: &Context, n: u32) -> Result<u32, AppError> {
    let _ = ctx.node_id();
    let doubled = checked(n)?;
    Ok(doubled)
}

fn checked(n: u32) -> dref::Result<u32> {
    Ok(n * 2)
}

/// `ctx = expr`, `try`, timeouts, generics, `impl Trait` arguments.
#[dref::lock("options", ctx = ctx, try)]
async fn try_it<T: Send>(ctx: Context, value: T) -> Result<T, AppError> {
    let _ = ctx;
    Ok(value)
}

#[dref::lock("options", ctx = &ctx, timeout = "1m30s")]
async fn patient(
    ctx: std::sync::Arc<Context>,
    items: impl IntoIterator<Item = u8>,
) -> Result<u8, AppError> {
    Ok(items.into_iter().sum())
}

#[dref::lock("options", ctx = ctx, timeout = Duration::from_millis(250))]
async fn dynamic(ctx: &Context) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = ctx;
    Ok(())
}

impl From<dref::Error> for Wrapped {
    fn from(e: dref::Error) -> Self {
        Wrapped(e.to_string())
    }
}

#[derive(Debug)]
struct Wrapped(String);

struct Service {
    ctx: Context,
}

impl Service {
    #[dref::lock("service", ctx = self.ctx)]
    async fn run(&self) -> Result<(), Wrapped> {
        Ok(())
    }

    #[dref::lock("service", ctx = self.ctx)]
    async fn consume(self) -> Result<Context, Wrapped> {
        Ok(self.ctx)
    }
}

trait Job {
    fn ctx(&self) -> &Context;

    #[dref::lock("job", ctx = self.ctx())]
    async fn run(&self) -> Result<(), AppError> {
        Ok(())
    }
}

impl Job for Service {
    fn ctx(&self) -> &Context {
        &self.ctx
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), AppError> {
    let ctx = Context::local();
    assert!(ctx.clone().scope(ambient()).await? > 0);
    assert_eq!(param(&ctx, 2).await?, 4);
    assert_eq!(try_it(ctx.clone(), "x").await?, "x");
    assert_eq!(patient(std::sync::Arc::new(ctx.clone()), [1, 2]).await?, 3);
    dynamic(&ctx)
        .await
        .map_err(|e| AppError::Dref(dref::Error::Config(e.to_string())))?;
    let service = Service { ctx };
    service
        .run()
        .await
        .map_err(|Wrapped(e)| AppError::Dref(dref::Error::Config(e)))?;
    Job::run(&service).await?;
    service
        .consume()
        .await
        .map_err(|Wrapped(e)| AppError::Dref(dref::Error::Config(e)))?;
    Ok(())
}
