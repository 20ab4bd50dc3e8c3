//! Every API permission the operator uses, in one list. The chart's ClusterRole and
//! Role are checked against it by a test, so the chart grants exactly what the code
//! needs: no wildcards, nothing more.

/// One RBAC rule: API group, resource, verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const OWNED: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Cluster-wide permissions (the operator watches EventPipelines in every namespace,
/// and KafkaTopics live in the Kafka cluster's namespace).
pub const CLUSTER_PERMISSIONS: &[Permission] = &[
    // Watch pipelines; patch adds and removes the finalizer.
    Permission { group: "eventpipe.dev", resource: "eventpipelines", verbs: &["get", "list", "watch", "patch"] },
    Permission { group: "eventpipe.dev", resource: "eventpipelines/status", verbs: &["get", "patch"] },
    // Server-side apply (patch) creates and updates; delete prunes.
    Permission { group: "kafka.strimzi.io", resource: "kafkatopics", verbs: OWNED },
    Permission { group: "apps", resource: "deployments", verbs: OWNED },
    Permission { group: "", resource: "configmaps", verbs: OWNED },
    Permission { group: "", resource: "services", verbs: OWNED },
    Permission { group: "", resource: "serviceaccounts", verbs: OWNED },
    Permission { group: "events.k8s.io", resource: "events", verbs: &["create", "patch"] },
];

/// Permissions in the operator's own namespace: its leader-election Lease.
pub const NAMESPACE_PERMISSIONS: &[Permission] =
    &[Permission { group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "update"] }];
