//! Bad input: wrong types, corrupt bytes, oversized values.

use bytes::Bytes;
use dref::engine::{FieldName, Key, Op, Write};
use dref::{Context, Error, ManualId};
use futures_util::StreamExt;

use crate::{within, Harness, Node};

/// A ref opened with another type than the record's is refused clearly,
/// and the record is untouched.
pub async fn type_mismatch_is_reported(h: &dyn Harness) {
    let node = Node::new(h).await;
    node.ctx
        .make(ManualId::<String>::new("typed"), "text".into())
        .await
        .unwrap();
    let err = node
        .ctx
        .make(ManualId::<u64>::new("typed"), 1)
        .await
        .unwrap_err();
    match &err {
        Error::TypeMismatch {
            stored, expected, ..
        } => {
            assert!(stored.contains("String"), "{err}");
            assert!(expected.contains("u64"), "{err}");
        }
        other => panic!("expected a type mismatch, got {other}"),
    }
    let r = node
        .ctx
        .make(ManualId::<String>::new("typed"), String::new())
        .await
        .unwrap();
    assert_eq!(r.get().await.unwrap(), "text");
}

/// Garbage bytes written under a ref's key by another client are decode
/// errors for readers and updaters (state unchanged), and error items in
/// change streams that go on afterwards.
pub async fn corrupt_bytes_are_reported(h: &dyn Harness) {
    let node = Node::new(h).await;
    let r = node
        .ctx
        .make(ManualId::<Vec<String>>::new("corrupt"), vec!["ok".into()])
        .await
        .unwrap();
    let mut changes = r.changes();
    let garbage = vec![(
        FieldName::from("value"),
        Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x01]),
    )];
    let key = r.key().clone();
    node.ctx
        .backend()
        .write(Write::new(key.clone(), Op::Patch(garbage)))
        .await
        .unwrap();
    let err = r.get().await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let err = r
        .update(|v| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            v
        })
        .await;
    // The cached value may be used for a first attempt; the rejected write
    // then returns the garbage, which must fail to decode.
    assert!(matches!(err, Err(Error::Decode { .. })), "{err:?}");
    let stored = node.ctx.backend().read(key.clone()).await.unwrap().unwrap();
    assert_eq!(
        &stored.field("value").unwrap().value[..],
        &[0xff, 0xff, 0xff, 0xff, 0x01]
    );
    let item = within("the error item", changes.next()).await.unwrap();
    assert!(
        matches!(item, Err(Error::Decode { .. })),
        "{:?}",
        item.map(|c| c.revision)
    );
    // A valid write heals the ref and the stream goes on.
    r.set(vec!["healed".into()]).await.unwrap();
    let change = within("the healing change", changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        change.kind,
        dref::ChangeKind::Updated(vec!["healed".to_string()])
    );
    assert_eq!(r.get().await.unwrap(), vec!["healed".to_string()]);

    // A record written without dref's metadata but with garbage is a
    // decode error at `make` too.
    let raw = Key::new("ref/raw-garbage");
    let fields = vec![(
        FieldName::from("value"),
        Bytes::from_static(b"\xff\xff\xff"),
    )];
    node.ctx
        .backend()
        .write(Write::new(raw, Op::Put(fields)))
        .await
        .unwrap();
    let err = node
        .ctx
        .make(ManualId::<String>::new("raw-garbage"), String::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
}

/// Values over the context's limit are refused before anything is sent.
pub async fn oversized_values_are_rejected(h: &dyn Harness) {
    let ctx = Context::builder()
        .backend_arc(h.backend().await)
        .max_value_bytes(1024)
        .build();
    let r = ctx
        .make(ManualId::<Vec<u8>>::new("big"), vec![1, 2, 3])
        .await
        .unwrap();
    let err = r.set(vec![0; 4096]).await.unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { size, limit: 1024, .. } if size > 4096),
        "{err}"
    );
    let err = ctx
        .make(ManualId::<Vec<u8>>::new("big2"), vec![0; 2000])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert_eq!(r.get().await.unwrap(), vec![1, 2, 3]);
}

#[dref::distributed]
#[derive(Clone, Debug, PartialEq)]
struct TwoTexts {
    a: String,
    b: String,
}

/// The size limit is on the record: field writes that each fit but
/// together would not are refused, atomically in the store, so that the
/// ref never holds a record that its own whole-value writes cannot
/// reproduce.
pub async fn field_writes_respect_the_record_limit(h: &dyn Harness) {
    let ctx = Context::builder()
        .backend_arc(h.backend().await)
        .max_value_bytes(1024)
        .build();
    let initial = TwoTexts {
        a: String::new(),
        b: String::new(),
    };
    let r = ctx.make(TwoTexts::id("two"), initial).await.unwrap();
    let big = "x".repeat(700);
    r.a().set(big.clone()).await.unwrap();
    let err = r.b().set(big.clone()).await.unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { size, limit: 1024, .. } if size > 1400),
        "{err}"
    );
    let err = r.b().update(|_| big.clone()).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    // Through another context, whose cache never saw the first write.
    let other = Context::builder()
        .backend_arc(h.backend().await)
        .max_value_bytes(1024)
        .build();
    let r2 = other
        .make(
            TwoTexts::id("two"),
            TwoTexts {
                a: String::new(),
                b: String::new(),
            },
        )
        .await
        .unwrap();
    let err = r2.b().set(big.clone()).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    let stored = r.get().await.unwrap();
    assert_eq!((stored.a.len(), stored.b.len()), (700, 0));
    // The whole value still round-trips within the limit.
    r.set(TwoTexts {
        a: "a".into(),
        b: big.clone(),
    })
    .await
    .unwrap();
    assert_eq!(r2.get().await.unwrap().b, big);
}
