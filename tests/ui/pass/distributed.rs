//! `#[distributed]` in its supported forms, with warnings denied: the
//! generated code must not warn in user crates.
#![deny(warnings)]

use std::collections::HashMap;

use dref::{distributed, ChangeKind, Context, FieldRef};
use serde::{Deserialize, Serialize};

#[distributed]
#[derive(Clone, Debug, PartialEq)]
pub struct Flags {
    pub beta_feature: bool,
    pub rollout: u8,
}

/// Options, renamed and skipped fields, private fields.
#[distributed(id = "settings", change = "SettingsEvent", fields = "SettingsHandles")]
#[derive(Clone, Debug)]
struct Settings {
    #[dref(rename = "max_conn")]
    max_connections: u32,
    r#type: String,
    #[dref(skip)]
    hits: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Address {
    city: String,
}

/// Generic parameters, one used only by a skipped field, with bounds and a
/// where clause; collection and nested serde fields.
#[distributed]
#[derive(Clone, Debug, PartialEq)]
struct Catalog<K, V: Clone, Local = ()>
where
    K: std::hash::Hash + Eq,
{
    entries: HashMap<K, V>,
    tags: Vec<Option<String>>,
    address: Address,
    #[dref(skip)]
    local: Option<Local>,
}

/// A struct without `Debug` or `PartialEq` still works (its change enum then
/// has no `Debug` or `PartialEq` either).
#[distributed]
#[derive(Clone)]
struct Plain {
    value: u64,
}

mod nested {
    /// A struct in another module: accessors keep the fields' visibility.
    #[dref::distributed]
    #[derive(Clone)]
    pub struct Counter {
        pub count: u64,
        pub(crate) label: String,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> dref::Result<()> {
    let ctx = Context::local();

    let flags = ctx
        .make(
            Flags::id("flags"),
            Flags {
                beta_feature: false,
                rollout: 0,
            },
        )
        .await?;
    let rollout: FieldRef<Flags, u8> = flags.rollout();
    rollout.set(5).await?;
    let mut changes = flags.changes();
    flags.beta_feature().update(|b| !b).await?;
    let _ = futures_util::StreamExt::next(&mut changes).await;
    let change: ChangeKind<Flags> = ChangeKind::Updated(FlagsChange::Rollout(5));
    assert_eq!(format!("{change:?}"), "Updated(Rollout(5))");
    match FlagsChange::BetaFeature(true) {
        FlagsChange::BetaFeature(on) => assert!(on),
        FlagsChange::Rollout(_) => unreachable!(),
    }

    let settings = ctx
        .make(
            Settings::default_id(),
            Settings {
                max_connections: 1,
                r#type: "db".into(),
                hits: 3,
            },
        )
        .await?;
    let handles: &SettingsHandles = settings.fields();
    handles.max_connections().set(2).await?;
    settings.r#type().set("cache".into()).await?;
    let event = SettingsEvent::Type("cache".into());
    assert_eq!(event.clone(), event);
    assert_eq!(settings.get().await?.hits, 0);

    let catalog = ctx
        .make(
            Catalog::<String, u32>::id("catalog-2"),
            Catalog {
                entries: HashMap::new(),
                tags: vec![],
                address: Address {
                    city: "Turin".into(),
                },
                local: None,
            },
        )
        .await?;
    catalog
        .entries()
        .update(|mut entries| {
            entries.insert("a".into(), 1);
            entries
        })
        .await?;
    assert_eq!(catalog.entries().get().await?.len(), 1);

    let plain = ctx.make(Plain::id("plain"), Plain { value: 1 }).await?;
    plain.value().update(|v| v + 1).await?;

    let counter = ctx
        .make(
            nested::Counter::id("counter"),
            nested::Counter {
                count: 0,
                label: "c".into(),
            },
        )
        .await?;
    counter.count().set(1).await?;
    counter.label().set("d".into()).await?;
    Ok(())
}
