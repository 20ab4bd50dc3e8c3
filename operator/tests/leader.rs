//! Leader election against an in-memory API: one holder at a time, renewals keep the
//! lease, an expired lease passes to the next candidate.

use std::time::Duration;

use eventpipe_operator::leader::{LeaderElector, Timing};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_fake_client::ClientBuilder;

#[tokio::test]
async fn one_replica_leads_until_its_lease_expires() {
    let client = ClientBuilder::new().build().await.unwrap();
    let timing = Timing { lease: Duration::from_secs(1), retry: Duration::from_millis(100) };
    let a = LeaderElector::new(client.clone(), "ops", "eventpipe-operator", "pod-a", timing);
    let b = LeaderElector::new(client.clone(), "ops", "eventpipe-operator", "pod-b", timing);

    assert!(a.try_acquire_or_renew().await.unwrap(), "a free lease is taken");
    assert!(!b.try_acquire_or_renew().await.unwrap(), "a held lease is not");
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    assert!(!b.try_acquire_or_renew().await.unwrap());

    // a stops renewing (its pod died): after the lease duration b takes over.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(b.try_acquire_or_renew().await.unwrap(), "an expired lease passes on");
    assert!(!a.try_acquire_or_renew().await.unwrap(), "and the old holder does not get it back");

    let lease = Api::<Lease>::namespaced(client, "ops").get("eventpipe-operator").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));
}
