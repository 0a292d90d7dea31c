//! The ambient context: the [`Context`] that code without one at hand (such
//! as a `#[dref::lock]` function without a `ctx` argument) uses.
//!
//! A task-local scope ([`Context::scope`]) wins over the process-wide
//! default ([`Context::set_default`]).

use std::future::Future;
use std::sync::RwLock;
use std::time::Duration;

use crate::context::Context;
use crate::{Error, Result};

static DEFAULT: RwLock<Option<Context>> = RwLock::new(None);

tokio::task_local! {
    static SCOPED: Context;
}

impl Context {
    /// Makes `ctx` the process-wide default context, returned by
    /// [`Context::current`] outside any [`Context::scope`]. Returns the
    /// previous default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
    /// use dref::Context;
    ///
    /// Context::set_default(Context::local());
    ///
    /// #[dref::lock("nightly-cleanup")]   // no `ctx =`: uses the default
    /// async fn cleanup() -> dref::Result<u32> {
    ///     Ok(3)
    /// }
    /// assert_eq!(cleanup().await?, 3);
    /// # Context::clear_default();
    /// # Ok(()) }
    /// ```
    pub fn set_default(ctx: Context) -> Option<Context> {
        let mut slot = DEFAULT
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.replace(ctx)
    }

    /// Removes the process-wide default context; returns it.
    pub fn clear_default() -> Option<Context> {
        let mut slot = DEFAULT
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.take()
    }

    /// Runs `fut` with `self` as the ambient context of the task: inside
    /// it, [`Context::current`] returns `self` (over the process-wide
    /// default). Scopes nest; the innermost wins. The scope covers `fut`
    /// itself, not tasks it spawns.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dref::Result<()> {
    /// use dref::Context;
    ///
    /// let ctx = Context::builder().node_id("node-a").build();
    /// let seen = ctx
    ///     .clone()
    ///     .scope(async { Context::current().map(|c| c.node_id().to_owned()) })
    ///     .await?;
    /// assert_eq!(seen, "node-a");
    /// # Ok(()) }
    /// ```
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        SCOPED.scope(self, fut)
    }

    /// The ambient context: the one of the innermost [`Context::scope`]
    /// running this task, else the process-wide default set with
    /// [`Context::set_default`]. Fails with [`Error::Config`] when there is
    /// neither.
    pub fn current() -> Result<Context> {
        if let Ok(ctx) = SCOPED.try_with(Context::clone) {
            return Ok(ctx);
        }
        let slot = DEFAULT
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.clone().ok_or_else(|| {
            Error::Config(
                "no ambient dref context: call `Context::set_default(ctx)` at startup, run \
                 the code inside `ctx.scope(...)`, or pass the context explicitly \
                 (`#[dref::lock(\"name\", ctx = ...)]` or a `&Context` parameter)"
                    .into(),
            )
        })
    }
}

// Helpers for the code `#[dref::lock]` generates.

/// How a `#[dref::lock]` function waits for its lock.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum LockMode {
    /// As long as it takes ([`Context::lock`]).
    Wait,
    /// Not at all ([`Context::try_lock`]).
    Try,
    /// At most this long ([`Context::lock_timeout`]).
    Timeout(Duration),
}

/// What a `ctx = ...` argument of `#[dref::lock]` may be: a [`Context`],
/// or anything that leads to one through references and `Arc`/`Box`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a dref context",
    label = "expected a `dref::Context` (or a reference, `Arc` or `Box` of one)"
)]
pub trait ContextSource {
    /// The context.
    fn context(&self) -> &Context;
}

impl ContextSource for Context {
    fn context(&self) -> &Context {
        self
    }
}

impl<C: ContextSource + ?Sized> ContextSource for &C {
    fn context(&self) -> &Context {
        (**self).context()
    }
}

impl<C: ContextSource + ?Sized> ContextSource for std::sync::Arc<C> {
    fn context(&self) -> &Context {
        (**self).context()
    }
}

impl<C: ContextSource + ?Sized> ContextSource for Box<C> {
    fn context(&self) -> &Context {
        (**self).context()
    }
}

/// The context named by a `ctx = ...` argument or a `&Context` parameter.
#[doc(hidden)]
pub fn context_of<C: ContextSource + ?Sized>(ctx: &C) -> Result<Context> {
    Ok(ctx.context().clone())
}

/// Runs the body of a `#[dref::lock]` function under its lock, converting
/// dref's errors (no context, lock busy, timeout, lock lost) into the
/// function's error type.
#[doc(hidden)]
pub async fn locked<T, E, B>(
    ctx: Result<Context>,
    name: &str,
    mode: LockMode,
    body: B,
) -> Result<T, E>
where
    B: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    let ctx = ctx?;
    let outcome = match mode {
        LockMode::Wait => ctx.lock(name, body).await,
        LockMode::Try => ctx.try_lock(name, body).await,
        LockMode::Timeout(timeout) => ctx.lock_timeout(name, timeout, body).await,
    };
    match outcome {
        Ok(result) => result,
        Err(e) => Err(E::from(e)),
    }
}
