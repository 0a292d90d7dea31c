//! Leader election.

use dref::Error;
use futures_util::StreamExt;

use crate::{within, Harness, Node};

/// Campaign, observe and resign.
pub async fn campaign_observe_resign(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let mut observed = b.ctx.observe("workers");
    assert_eq!(
        within("the initial leader", observed.next())
            .await
            .unwrap()
            .unwrap(),
        None
    );
    let lead = a.ctx.campaign("workers").await.unwrap();
    let leader = within("the new leader", observed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(leader.node_id, a.ctx.node_id());
    assert_eq!(leader.token, lead.token());
    assert_eq!(b.ctx.leader("workers").await.unwrap(), Some(leader));
    let err = b.ctx.try_campaign("workers").await.unwrap_err();
    assert!(matches!(err, Error::LockBusy { .. }), "{err}");
    lead.resign().await.unwrap();
    assert_eq!(
        within("no leader", observed.next()).await.unwrap().unwrap(),
        None
    );
    let lead_b = b.ctx.try_campaign("workers").await.unwrap();
    let leader = within("leader b", observed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(leader.node_id, b.ctx.node_id());
    assert!(leader.token > lead_token_floor(&lead_b));
}

fn lead_token_floor(l: &dref::Leadership) -> dref::FencingToken {
    dref::FencingToken(l.token().0 - 1)
}

/// When the leader's context shuts down, a waiting candidate takes over.
pub async fn leader_failover_on_shutdown(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let lead = a.ctx.campaign("failover").await.unwrap();
    let candidate = {
        let ctx = b.ctx.clone();
        tokio::spawn(async move { ctx.campaign("failover").await })
    };
    a.ctx.shutdown().await.unwrap();
    let err = within("the old leader to notice", lead.lost()).await;
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    let next = within("the failover", candidate).await.unwrap().unwrap();
    assert!(next.token() > lead.token());
    assert_eq!(
        b.ctx.leader("failover").await.unwrap().unwrap().node_id,
        b.ctx.node_id()
    );

    // Dropping every handle on a context (as when a service stops) releases
    // its leadership too, without waiting for the TTL.
    let c = Node::new(h).await;
    let candidate = {
        let ctx = c.ctx.clone();
        tokio::spawn(async move { ctx.campaign("failover").await })
    };
    let started = tokio::time::Instant::now();
    drop(b);
    let third = within("the failover after drop", candidate)
        .await
        .unwrap()
        .unwrap();
    assert!(third.token() > next.token());
    let err = within("the dropped leader's guard to notice", next.lost()).await;
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    assert!(
        started.elapsed() < h.session_ttl(),
        "a dropped context's leadership waited for expiry: {:?}",
        started.elapsed()
    );
}

/// When the leader stops keeping its session alive (a hung or cut-off
/// node), leadership moves within about one session TTL, and the old leader
/// learns it lost leadership before the new one is elected.
pub async fn leader_failover_on_silent_death(h: &dyn Harness) {
    let a = Node::new(h).await;
    let b = Node::new(h).await;
    let lead = a.ctx.campaign("silent").await.unwrap();
    let candidate = {
        let ctx = b.ctx.clone();
        tokio::spawn(async move { ctx.campaign("silent").await })
    };
    let started = tokio::time::Instant::now();
    a.faults.fail_keep_alives(true);
    let next = within("the failover", candidate).await.unwrap().unwrap();
    assert!(
        lead.is_lost(),
        "a new leader was elected before the old one knew"
    );
    assert!(next.token() > lead.token());
    // Within one TTL after the last keep-alive (which was at most a third
    // of a TTL before the fault), plus scheduling slack.
    let bound = h.session_ttl() * 2 + std::time::Duration::from_secs(2);
    assert!(
        started.elapsed() < bound,
        "failover took {:?}",
        started.elapsed()
    );
}
