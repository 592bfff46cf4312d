//! Members for a cluster on loopback: free ports for each replica's peer and client address.

use lockstep_server::Member;

/// `count` members on free loopback ports.
pub fn loopback_members(count: u64) -> Result<Vec<Member>, String> {
    let port = || -> Result<String, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        Ok(address.to_string())
    };
    (1..=count).map(|id| Ok(Member { id, peer: port()?, client: port()?, etcd: None })).collect()
}
