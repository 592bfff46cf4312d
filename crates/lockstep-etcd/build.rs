//! Generates the gRPC service glue for etcd's v3 API from service descriptions written here in
//! Rust (tonic-build's manual mode): no `.proto` files and no `protoc`. The messages are
//! defined by hand in `src/proto.rs`.

use tonic_build::manual::{Builder, Method, Service};

/// (Rust name, route name, request, response, client streaming, server streaming)
type MethodSpec = (&'static str, &'static str, &'static str, &'static str, bool, bool);

fn service(name: &str, methods: &[MethodSpec]) -> Service {
    let mut builder = Service::builder().name(name).package("etcdserverpb");
    for &(rust, route, input, output, client_streaming, server_streaming) in methods {
        let mut method = Method::builder()
            .name(rust)
            .route_name(route)
            .input_type(format!("crate::proto::etcdserverpb::{input}"))
            .output_type(format!("crate::proto::etcdserverpb::{output}"))
            .codec_path("tonic_prost::ProstCodec");
        if client_streaming {
            method = method.client_streaming();
        }
        if server_streaming {
            method = method.server_streaming();
        }
        builder = builder.method(method.build());
    }
    builder.build()
}

fn main() {
    let kv = service(
        "KV",
        &[
            ("range", "Range", "RangeRequest", "RangeResponse", false, false),
            ("put", "Put", "PutRequest", "PutResponse", false, false),
            (
                "delete_range",
                "DeleteRange",
                "DeleteRangeRequest",
                "DeleteRangeResponse",
                false,
                false,
            ),
            ("txn", "Txn", "TxnRequest", "TxnResponse", false, false),
            ("compact", "Compact", "CompactionRequest", "CompactionResponse", false, false),
        ],
    );
    let cluster = service(
        "Cluster",
        &[
            ("member_add", "MemberAdd", "MemberAddRequest", "MemberAddResponse", false, false),
            (
                "member_remove",
                "MemberRemove",
                "MemberRemoveRequest",
                "MemberRemoveResponse",
                false,
                false,
            ),
            (
                "member_update",
                "MemberUpdate",
                "MemberUpdateRequest",
                "MemberUpdateResponse",
                false,
                false,
            ),
            ("member_list", "MemberList", "MemberListRequest", "MemberListResponse", false, false),
            (
                "member_promote",
                "MemberPromote",
                "MemberPromoteRequest",
                "MemberPromoteResponse",
                false,
                false,
            ),
        ],
    );
    let maintenance = service(
        "Maintenance",
        &[
            ("alarm", "Alarm", "AlarmRequest", "AlarmResponse", false, false),
            ("status", "Status", "StatusRequest", "StatusResponse", false, false),
            ("hash", "Hash", "HashRequest", "HashResponse", false, false),
            ("hash_kv", "HashKV", "HashKvRequest", "HashKvResponse", false, false),
            ("defragment", "Defragment", "DefragmentRequest", "DefragmentResponse", false, false),
            ("move_leader", "MoveLeader", "MoveLeaderRequest", "MoveLeaderResponse", false, false),
        ],
    );
    let watch =
        service("Watch", &[("watch", "Watch", "WatchRequest", "WatchResponse", true, true)]);
    let lease = service(
        "Lease",
        &[
            ("lease_grant", "LeaseGrant", "LeaseGrantRequest", "LeaseGrantResponse", false, false),
            (
                "lease_revoke",
                "LeaseRevoke",
                "LeaseRevokeRequest",
                "LeaseRevokeResponse",
                false,
                false,
            ),
            (
                "lease_keep_alive",
                "LeaseKeepAlive",
                "LeaseKeepAliveRequest",
                "LeaseKeepAliveResponse",
                true,
                true,
            ),
            (
                "lease_time_to_live",
                "LeaseTimeToLive",
                "LeaseTimeToLiveRequest",
                "LeaseTimeToLiveResponse",
                false,
                false,
            ),
            (
                "lease_leases",
                "LeaseLeases",
                "LeaseLeasesRequest",
                "LeaseLeasesResponse",
                false,
                false,
            ),
        ],
    );
    let auth_methods: Vec<MethodSpec> = [
        ("auth_enable", "AuthEnable", "AuthEnable"),
        ("auth_disable", "AuthDisable", "AuthDisable"),
        ("auth_status", "AuthStatus", "AuthStatus"),
        ("authenticate", "Authenticate", "Authenticate"),
        ("user_add", "UserAdd", "AuthUserAdd"),
        ("user_get", "UserGet", "AuthUserGet"),
        ("user_list", "UserList", "AuthUserList"),
        ("user_delete", "UserDelete", "AuthUserDelete"),
        ("user_change_password", "UserChangePassword", "AuthUserChangePassword"),
        ("user_grant_role", "UserGrantRole", "AuthUserGrantRole"),
        ("user_revoke_role", "UserRevokeRole", "AuthUserRevokeRole"),
        ("role_add", "RoleAdd", "AuthRoleAdd"),
        ("role_get", "RoleGet", "AuthRoleGet"),
        ("role_list", "RoleList", "AuthRoleList"),
        ("role_delete", "RoleDelete", "AuthRoleDelete"),
        ("role_grant_permission", "RoleGrantPermission", "AuthRoleGrantPermission"),
        ("role_revoke_permission", "RoleRevokePermission", "AuthRoleRevokePermission"),
    ]
    .iter()
    .map(|&(rust, route, message)| {
        // The strings live for the whole build script.
        let request: &'static str = Box::leak(format!("{message}Request").into_boxed_str());
        let response: &'static str = Box::leak(format!("{message}Response").into_boxed_str());
        (rust, route, request, response, false, false)
    })
    .collect();
    let auth = service("Auth", &auth_methods);
    Builder::new().compile(&[kv, cluster, maintenance, watch, lease, auth]);
    println!("cargo:rerun-if-changed=build.rs");
}
