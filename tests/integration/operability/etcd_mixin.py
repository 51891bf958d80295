"""The metrics etcd's monitoring mixin (etcd-io/etcd contrib/mixin: the
Grafana dashboard and the Prometheus alert rules) queries, written down from
its queries: name, Prometheus type, the labels the queries select or group
by (beyond job/instance/cluster, which Prometheus adds), and for histograms
the bucket bounds etcd 3.4 uses.  `up` is Prometheus' own and not listed.

Where a query filters on a label value, the value is listed too: the series
must exist with that value for the panel to show anything.
"""


def exp_buckets(start, factor, count):
    return [start * factor ** i for i in range(count)]


DEF_BUCKETS = [.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10]

# name: (type, labels, histogram buckets or None, {label: value a query selects})
MIXIN = {
    # alerts: etcdNoLeader; dashboard: "Up" panel and the cluster variable
    "etcd_server_has_leader": ("gauge", set(), None, {}),
    # alerts: etcdHighNumberOfLeaderChanges; dashboard: leader elections per day
    "etcd_server_leader_changes_seen_total": ("counter", set(), None, {}),
    # alerts: etcdHighNumberOfFailedProposals; dashboard: raft proposals
    "etcd_server_proposals_failed_total": ("counter", set(), None, {}),
    "etcd_server_proposals_pending": ("gauge", set(), None, {}),
    "etcd_server_proposals_committed_total": ("gauge", set(), None, {}),
    "etcd_server_proposals_applied_total": ("gauge", set(), None, {}),
    # alerts: etcdMembersDown
    "etcd_network_peer_sent_failures_total": ("counter", {"To"}, None, {}),
    # alerts: etcdMemberCommunicationSlow; dashboard: peer round trip time
    "etcd_network_peer_round_trip_time_seconds": (
        "histogram", {"To"}, exp_buckets(0.0001, 2, 16), {}),
    # dashboard: peer traffic in/out
    "etcd_network_peer_received_bytes_total": ("counter", {"From"}, None, {}),
    "etcd_network_peer_sent_bytes_total": ("counter", {"To"}, None, {}),
    # dashboard: client traffic in/out
    "etcd_network_client_grpc_received_bytes_total": ("counter", set(), None, {}),
    "etcd_network_client_grpc_sent_bytes_total": ("counter", set(), None, {}),
    # alerts: etcdHighNumberOfFailedGRPCRequests; dashboard: RPC rate, active streams
    "grpc_server_started_total": (
        "counter", {"grpc_type", "grpc_service", "grpc_method"}, None, {"grpc_type": "unary"}),
    "grpc_server_handled_total": (
        "counter", {"grpc_type", "grpc_service", "grpc_method", "grpc_code"}, None,
        {"grpc_type": "unary"}),
    # alerts: etcdGRPCRequestsSlow (etcd exports it with --metrics=extensive)
    "grpc_server_handling_seconds": (
        "histogram", {"grpc_type", "grpc_service", "grpc_method"}, DEF_BUCKETS,
        {"grpc_type": "unary"}),
    # alerts: etcdHighFsyncDurations; dashboard: disk sync duration
    "etcd_disk_wal_fsync_duration_seconds": ("histogram", set(), exp_buckets(0.001, 2, 14), {}),
    # alerts: etcdHighCommitDurations; dashboard: disk sync duration
    "etcd_disk_backend_commit_duration_seconds": (
        "histogram", set(), exp_buckets(0.001, 2, 14), {}),
    # alerts: etcdDatabaseQuotaLowSpace, etcdExcessiveDatabaseGrowth,
    # etcdDatabaseHighFragmentationRatio; dashboard: DB size
    "etcd_mvcc_db_total_size_in_bytes": ("gauge", set(), None, {}),
    "etcd_server_quota_backend_bytes": ("gauge", set(), None, {}),
    "etcd_mvcc_db_total_size_in_use_in_bytes": ("gauge", set(), None, {}),
    # dashboard: memory
    "process_resident_memory_bytes": ("gauge", set(), None, {}),
}

# The dashboard's "active streams" panel: started minus handled for these.
STREAMS = [("etcdserverpb.Watch", "bidi_stream"), ("etcdserverpb.Lease", "bidi_stream")]
