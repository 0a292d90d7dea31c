//! Many concurrent updates of one ref through one context (which the ref
//! layer combines into shared writes on a backend whose writes are in
//! flight for a while): each caller gets the result it would have had
//! alone at its place in some order, and failures stay with their caller.

use std::collections::BTreeSet;

use dref::ManualId;

use crate::{within, Harness, Node};

const TASKS: u64 = 64;
const UPDATES: u64 = 20;

#[derive(Debug)]
enum Refusal {
    Refused(u64),
    Dref(dref::Error),
}

impl From<dref::Error> for Refusal {
    fn from(e: dref::Error) -> Self {
        Refusal::Dref(e)
    }
}

/// 64 tasks on one context increment one counter, with refusing updates
/// among them: the values the increments saw are exactly 0..n, once each,
/// and every refusal came back to its caller unwritten.
pub async fn combined_updates_get_their_own_results(h: &dyn Harness) {
    let node = Node::new(h).await;
    let counter = node
        .ctx
        .make(ManualId::<u64>::new("combined"), 0)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..UPDATES {
                if (t + i) % 7 == 0 {
                    let refused = counter
                        .update_async(|v| async move { Err::<u64, _>(Refusal::Refused(v)) })
                        .await;
                    match refused {
                        Err(Refusal::Refused(v)) => assert!(v < TASKS * UPDATES, "saw {v}"),
                        Err(Refusal::Dref(e)) => panic!("a refusing update failed: {e}"),
                        Ok(()) => panic!("a refusing update was written"),
                    }
                } else {
                    seen.push(counter.get_and_update(|v| v + 1).await.unwrap());
                }
            }
            seen
        }));
    }
    let mut seen = BTreeSet::new();
    let mut increments = 0;
    for task in tasks {
        for old in within("the updating tasks", task).await.unwrap() {
            increments += 1;
            assert!(seen.insert(old), "two increments both saw {old}");
        }
    }
    assert_eq!(seen, (0..increments).collect::<BTreeSet<_>>());
    assert_eq!(counter.get().await.unwrap(), increments);
}

#[dref::distributed]
#[derive(Clone, Debug, PartialEq)]
struct Pair {
    left: u64,
    right: u64,
}

/// Concurrent updates of two fields of one struct, and of the whole
/// struct, through one context: every field increment is kept and each
/// saw a distinct value of its field.
pub async fn combined_field_updates_get_their_own_results(h: &dyn Harness) {
    let node = Node::new(h).await;
    let pair = node
        .ctx
        .make(Pair::id("pair"), Pair { left: 0, right: 0 })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS / 2 {
        let pair = pair.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = (Vec::new(), Vec::new());
            for i in 0..UPDATES / 2 {
                match (t + i) % 4 {
                    0 => seen
                        .0
                        .push(pair.left().get_and_update(|v| v + 1).await.unwrap()),
                    1 | 2 => seen
                        .1
                        .push(pair.right().get_and_update(|v| v + 1).await.unwrap()),
                    _ => {
                        // A whole-struct update adds one to each field.
                        let old = pair
                            .get_and_update(|p| Pair {
                                left: p.left + 1,
                                right: p.right + 1,
                            })
                            .await
                            .unwrap();
                        seen.0.push(old.left);
                        seen.1.push(old.right);
                    }
                }
            }
            seen
        }));
    }
    let (mut left, mut right) = (BTreeSet::new(), BTreeSet::new());
    for task in tasks {
        let (l, r) = within("the updating tasks", task).await.unwrap();
        for old in l {
            assert!(left.insert(old), "two updates of `left` both saw {old}");
        }
        for old in r {
            assert!(right.insert(old), "two updates of `right` both saw {old}");
        }
    }
    let stored = pair.get().await.unwrap();
    assert_eq!(stored.left, left.len() as u64);
    assert_eq!(stored.right, right.len() as u64);
    assert_eq!(left, (0..stored.left).collect::<BTreeSet<_>>());
    assert_eq!(right, (0..stored.right).collect::<BTreeSet<_>>());
}
