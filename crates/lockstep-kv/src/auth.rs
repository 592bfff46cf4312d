//! Users, roles and permissions on key ranges (etcd's authentication and RBAC), as part of the
//! replicated state.
//!
//! The auth store is changed only through the log, carried by checkpoints and covered by the
//! state digest. Every change raises its **revision**; a token names the revision it was
//! issued at, and a token older than the store is refused ([`AuthError::OldRevision`], on
//! which etcd's clients authenticate again), so a permission taken away is never used again
//! through a token issued before.
//!
//! **Tokens** are issued by any member and checked by every member, with no log entry per
//! authentication: a token is its claims (user, auth revision, expiry) and a keyed BLAKE3 MAC
//! of them under the store's **token key**, 32 random bytes chosen by the member that
//! proposed `auth enable` and replicated with it. Whoever can read a member's data directory
//! can forge tokens, as they can read every key; see docs/SECURITY.md.
//!
//! **Members' tokens** let a member make its own requests (raising an alarm, a lease's
//! bookkeeping, what watchers poll) through another member, once authentication is on: a
//! member that does not lead sends them to the leader as any client would. Such a token names
//! the member and an expiry, MAC'd under a key derived from the token key (so it is never
//! mistaken for a user's); every member can issue one, and it is good only for the members'
//! own requests ([`crate::Request::is_members`]) and its automatic compaction.
//!
//! **Passwords** are never in the log: the member that takes a password hashes it (argon2id,
//! salted) before it proposes the user, and checks one against the hash off the replica
//! thread. The store keeps the hash as a PHC string.
//!
//! Permissions are checked where a request is taken, before it is proposed, and again when it
//! is applied, against the store at that entry: a replica of another version may have let it
//! through, and the store may have changed in between.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::KeyRange;

/// The user that holds every permission once it has the root role.
pub const ROOT_USER: &str = "root";

/// The role that grants every permission, and management of users, roles, members and the
/// store itself.
pub const ROOT_ROLE: &str = "root";

/// Names of users and roles may be at most this long (bytes).
pub const NAME_BYTES_MAX: usize = 512;

/// Roles may hold at most this many permissions, and users at most this many roles.
pub const GRANTS_MAX: usize = 1024;

/// At most this many users and as many roles.
pub const ENTRIES_MAX: usize = 65_536;

/// What a permission allows on its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermissionKind {
    /// Reading (ranges, watches, comparisons).
    #[default]
    Read,
    /// Writing (puts, deletes).
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionKind {
    fn allows(self, needed: PermissionKind) -> bool {
        self == PermissionKind::ReadWrite || self == needed
    }
}

/// A permission of a role: a kind on a key or a range of keys (as etcd spells ranges).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub kind: PermissionKind,
    /// The first key.
    pub key: Bytes,
    /// Empty: `key` alone. `[0]`: every key from `key` on. Otherwise the end, excluded.
    pub range_end: Bytes,
}

impl Permission {
    /// The keys it covers as a half-open interval: `(start, end)`, `None` for no end.
    fn interval(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        interval(&self.key, &self.range_end)
    }
}

/// `[key, end)` of etcd's range spelling; `None`: unbounded.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), Some(end))
    } else if range_end == [0] {
        (key.to_vec(), None)
    } else {
        (key.to_vec(), Some(range_end.to_vec()))
    }
}

/// A user as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its password's argon2 hash (a PHC string); `None`: it cannot authenticate with a
    /// password (etcd's `--no-password`: only a client certificate names it).
    pub password_hash: Option<String>,
    /// Its roles.
    pub roles: BTreeSet<String>,
}

/// A request to the auth store. Reads are marked in [`AuthRequest::is_read_only`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRequest {
    /// Turn authentication on, with a new token key (the root user must exist and hold the
    /// root role).
    Enable {
        /// The key tokens are signed with from now on.
        token_key: [u8; 32],
        /// The Ed25519 public key of the members' JWT signing key, if they issue JWTs.
        jwt_key: Option<[u8; 32]>,
    },
    /// Turn authentication off (root only).
    Disable,
    /// Whether authentication is on, and the store's revision (anyone).
    Status,
    /// Add a user.
    UserAdd {
        /// Its name.
        name: String,
        /// Its password's hash (`None`: no password).
        password_hash: Option<String>,
    },
    /// A user's roles (root, or the user itself).
    UserGet {
        /// The user.
        name: String,
    },
    /// Every user's name.
    UserList,
    /// Delete a user.
    UserDelete {
        /// The user.
        name: String,
    },
    /// Change a user's password (root, or the user itself).
    UserChangePassword {
        /// The user.
        name: String,
        /// The new password's hash.
        password_hash: String,
    },
    /// Give a user a role.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Take a role from a user.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Add a role.
    RoleAdd {
        /// Its name.
        name: String,
    },
    /// A role's permissions.
    RoleGet {
        /// The role.
        name: String,
    },
    /// Every role's name.
    RoleList,
    /// Delete a role (and take it from every user).
    RoleDelete {
        /// The role.
        name: String,
    },
    /// Give a role a permission.
    RoleGrantPermission {
        /// The role.
        name: String,
        /// The permission.
        permission: Permission,
    },
    /// Take from a role the permission on exactly this key or range.
    RoleRevokePermission {
        /// The role.
        name: String,
        /// The key.
        key: Bytes,
        /// The range's end, as the permission was granted.
        range_end: Bytes,
    },
    /// Whether the caller holds the root role (answers `Done`, or refuses).
    RequireRoot,
    /// Whether the caller may do `kind` on the range (answers `Done`, or refuses): what a
    /// watch is checked with when it is created.
    RequirePermission {
        /// The range.
        range: KeyRange,
        /// What the caller would do.
        kind: PermissionKind,
    },
    /// A user's password hash and the store's revision: for the member that checks a
    /// password (taken only from a client in the same process as the replica).
    Password {
        /// The user.
        name: String,
    },
    /// A token for `name` at `revision` expiring at `expires_millis` (taken only from a
    /// client in the same process as the replica: the member that checked a password, or
    /// the client certificate that names the user).
    Issue {
        /// The user.
        name: String,
        /// The store's revision the caller checked the user at; refused if it moved on.
        revision: u64,
        /// When it expires (milliseconds since the Unix epoch).
        expires_millis: u64,
    },
    /// A token for this member itself, expiring at `expires_millis`, for its own requests
    /// through other members (taken only from a client in the same process as the replica).
    MemberToken {
        /// The member.
        member: u64,
        /// When it expires (milliseconds since the Unix epoch).
        expires_millis: u64,
    },
}

impl AuthRequest {
    /// Whether it only reads.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            AuthRequest::Status
                | AuthRequest::UserGet { .. }
                | AuthRequest::UserList
                | AuthRequest::RoleGet { .. }
                | AuthRequest::RoleList
                | AuthRequest::RequireRoot
                | AuthRequest::RequirePermission { .. }
                | AuthRequest::Password { .. }
                | AuthRequest::Issue { .. }
                | AuthRequest::MemberToken { .. }
        )
    }

    /// Whether only a client in the replica's own process may ask it: password hashes and
    /// tokens for any user or member, and turning authentication on (whose token key a
    /// member chooses).
    pub fn is_member_only(&self) -> bool {
        matches!(
            self,
            AuthRequest::Password { .. }
                | AuthRequest::Issue { .. }
                | AuthRequest::MemberToken { .. }
                | AuthRequest::Enable { .. }
        )
    }
}

/// The auth store's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResponse {
    /// Done (a change, or a check that passed).
    Done,
    /// Whether authentication is on, and the store's revision.
    Status {
        /// On.
        enabled: bool,
        /// The store's revision.
        revision: u64,
    },
    /// A user's roles.
    User(Vec<String>),
    /// Names of users or roles.
    Names(Vec<String>),
    /// A role's permissions.
    Role(Vec<Permission>),
    /// A password hash (`None`: the user has no password) and the store's revision.
    Password {
        /// The hash.
        hash: Option<String>,
        /// The store's revision.
        revision: u64,
    },
    /// A token.
    Token(String),
}

/// Why the auth store refused (nothing changed). Each is one of etcd's errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthError {
    /// Authentication is on and the request carries no user.
    UserEmpty,
    /// The token does not verify, has expired, or names a user that no longer exists.
    InvalidToken,
    /// The token was issued before the store last changed: authenticate again.
    OldRevision,
    /// The user lacks the permission.
    PermissionDenied,
    /// Wrong user or password.
    AuthFailed,
    /// The user exists already.
    UserExists,
    /// No such user.
    UserNotFound,
    /// The role exists already.
    RoleExists,
    /// No such role.
    RoleNotFound,
    /// The user does not hold the role.
    RoleNotGranted,
    /// The role holds no such permission.
    PermissionNotGranted,
    /// Authentication cannot be turned on without a root user.
    RootUserMissing,
    /// Authentication cannot be turned on while the root user lacks the root role.
    RootRoleMissing,
    /// Authentication is off.
    NotEnabled,
    /// The change would lock every user out (deleting root, or its role, while enabled).
    InvalidManagement,
    /// A name is empty or too long, or a limit is reached.
    Invalid(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // etcd's messages, without its "etcdserver: " prefix.
        f.write_str(match self {
            AuthError::UserEmpty => "user name is empty",
            AuthError::InvalidToken => "invalid auth token",
            AuthError::OldRevision => "revision of auth store is old",
            AuthError::PermissionDenied => "permission denied",
            AuthError::AuthFailed => "authentication failed, invalid user ID or password",
            AuthError::UserExists => "user name already exists",
            AuthError::UserNotFound => "user name not found",
            AuthError::RoleExists => "role name already exists",
            AuthError::RoleNotFound => "role name not found",
            AuthError::RoleNotGranted => "role is not granted to the user",
            AuthError::PermissionNotGranted => "permission is not granted to the role",
            AuthError::RootUserMissing => "root user does not exist",
            AuthError::RootRoleMissing => "root user does not have root role",
            AuthError::NotEnabled => "authentication is not enabled",
            AuthError::InvalidManagement => "invalid auth management",
            AuthError::Invalid(reason) => return f.write_str(reason),
        })
    }
}

impl std::error::Error for AuthError {}

/// What a token says; MAC'd under the token key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    version: u8,
    user: String,
    revision: u64,
    expires_millis: u64,
}

const CLAIMS_VERSION: u8 = 1;

/// What a member's token says; MAC'd under the member token key ([`AuthStore::member_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MemberClaims {
    version: u8,
    member: u64,
    expires_millis: u64,
}

/// How a member's token begins (a user's token is hexadecimal digits, a JWT base64: neither
/// begins so).
const MEMBER_TOKEN_PREFIX: &str = "member-";

/// Whether `token` is a member's (see the module documentation), not a user's. It says
/// nothing of whether the token is good.
pub fn is_member_token(token: &str) -> bool {
    token.starts_with(MEMBER_TOKEN_PREFIX)
}

/// The claims of a token, without checking it: what a member reads to refuse an expired token
/// before it costs anything else. `None` if it is not a token at all.
pub fn token_expiry_millis(token: &str) -> Option<u64> {
    if token.matches('.').count() == 2 {
        return jwt::expiry_millis(token);
    }
    let (claims, _) = split_token(token)?;
    Some(claims.expires_millis)
}

/// The user a token names, read without checking it (for a token already checked).
pub fn token_user(token: &str) -> Option<String> {
    if token.matches('.').count() == 2 {
        return jwt::user(token);
    }
    split_token(token).map(|(claims, _)| claims.user)
}

fn split_token(token: &str) -> Option<(Claims, [u8; 32])> {
    let (claims_hex, mac_hex) = token.split_once('.')?;
    let claims_bytes = from_hex(claims_hex)?;
    let claims: Claims = postcard::from_bytes(&claims_bytes).ok()?;
    if claims.version != CLAIMS_VERSION {
        return None;
    }
    let mac: [u8; 32] = from_hex(mac_hex)?.try_into().ok()?;
    Some((claims, mac))
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 4096 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes().chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// JSON Web Tokens signed with Ed25519 (`EdDSA`), as etcd's `--auth-token jwt` issues them:
/// the claims `username`, `revision` and `exp` (seconds since the Unix epoch).
pub mod jwt {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
    use serde::{Deserialize, Serialize};

    use super::{Claims, CLAIMS_VERSION};

    const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

    /// Tokens longer than this are not read.
    const TOKEN_BYTES_MAX: usize = 4096;

    #[derive(Serialize, Deserialize)]
    struct JwtClaims {
        username: String,
        revision: u64,
        exp: u64,
    }

    /// A token for `user` at the auth store's `revision`, expiring at `expires_millis`
    /// (rounded down to the second), signed with `key`.
    pub fn sign(key: &SigningKey, user: &str, revision: u64, expires_millis: u64) -> String {
        let claims = JwtClaims { username: user.to_string(), revision, exp: expires_millis / 1000 };
        // Encoding a string and two integers cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
        let signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// When `token` expires, read without checking its signature.
    pub(super) fn expiry_millis(token: &str) -> Option<u64> {
        unchecked(token).map(|claims| claims.exp.saturating_mul(1000))
    }

    /// The user `token` names, read without checking its signature.
    pub(super) fn user(token: &str) -> Option<String> {
        unchecked(token).map(|claims| claims.username)
    }

    fn unchecked(token: &str) -> Option<JwtClaims> {
        if token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let payload = token.split('.').nth(1)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    /// The claims of `token` if it is an EdDSA JWT whose signature `key` verifies.
    pub(super) fn verify(key: &[u8; 32], token: &str) -> Option<Claims> {
        if token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "EdDSA" {
            return None;
        }
        let signature: [u8; 64] = URL_SAFE_NO_PAD.decode(signature).ok()?.try_into().ok()?;
        let key = VerifyingKey::from_bytes(key).ok()?;
        key.verify(signed.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature)).ok()?;
        let claims: JwtClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        Some(Claims {
            version: CLAIMS_VERSION,
            user: claims.username,
            revision: claims.revision,
            expires_millis: claims.exp.saturating_mul(1000),
        })
    }
}

/// The auth store. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStore {
    enabled: bool,
    /// Raised by every change (etcd's auth revision).
    revision: u64,
    token_key: [u8; 32],
    /// The Ed25519 public key JWTs are checked with, if the members issue them.
    jwt_key: Option<[u8; 32]>,
    users: BTreeMap<String, User>,
    /// Each role's permissions.
    roles: BTreeMap<String, BTreeSet<Permission>>,
}

impl AuthStore {
    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The store's revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The store as one element of the state's digest (it changes rarely and is small: hashed
    /// whole at each change).
    pub(crate) fn element(&self) -> Vec<u8> {
        let mut out = vec![b'A'];
        // Encoding a map of strings and byte strings cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Whether the store is as a store that never changed.
    pub(crate) fn is_pristine(&self) -> bool {
        *self == AuthStore::default()
    }

    /// Checks `token` at `now_millis`: the user it names, if it verifies and is current. A
    /// replica behind the one that issued a token sees a revision ahead of its own, and takes
    /// it; applying an entry never can (a token is issued at a revision some member applied,
    /// so every entry proposed after it applies at that revision or later): there, with
    /// `applying`, a revision ahead is refused.
    pub fn verify(&self, token: &str, now_millis: u64, applying: bool) -> Result<&str, AuthError> {
        let claims = if token.matches('.').count() == 2 {
            let key = self.jwt_key.as_ref().ok_or(AuthError::InvalidToken)?;
            jwt::verify(key, token).ok_or(AuthError::InvalidToken)?
        } else {
            let (claims, mac) = split_token(token).ok_or(AuthError::InvalidToken)?;
            let expected = self.mac(&claims);
            if !constant_time_eq(&mac, &expected) {
                return Err(AuthError::InvalidToken);
            }
            claims
        };
        if claims.expires_millis < now_millis {
            return Err(AuthError::InvalidToken);
        }
        let Some((name, _)) = self.users.get_key_value(&claims.user) else {
            return Err(AuthError::InvalidToken);
        };
        if claims.revision < self.revision {
            return Err(AuthError::OldRevision);
        }
        if applying && claims.revision > self.revision {
            return Err(AuthError::InvalidToken);
        }
        Ok(name)
    }

    fn mac(&self, claims: &Claims) -> [u8; 32] {
        let bytes = postcard::to_stdvec(claims).unwrap_or_default();
        *blake3::keyed_hash(&self.token_key, &bytes).as_bytes()
    }

    /// The key members' tokens are MAC'd under: derived from the token key, so that no user's
    /// token is ever a member's.
    fn member_key(&self) -> [u8; 32] {
        blake3::derive_key("lockstep 2026-12 member token key", &self.token_key)
    }

    /// A token for `member`'s own requests, good until `expires_millis`.
    fn issue_member(&self, member: u64, expires_millis: u64) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::NotEnabled);
        }
        let claims = MemberClaims { version: CLAIMS_VERSION, member, expires_millis };
        let bytes = postcard::to_stdvec(&claims).unwrap_or_default();
        let mac = blake3::keyed_hash(&self.member_key(), &bytes);
        Ok(format!("{MEMBER_TOKEN_PREFIX}{}.{}", to_hex(&bytes), to_hex(mac.as_bytes())))
    }

    /// Checks a member's token at `now_millis`: the member it names, if it verifies under
    /// this store's key and has not expired.
    pub fn verify_member(&self, token: &str, now_millis: u64) -> Result<u64, AuthError> {
        if !self.enabled {
            return Err(AuthError::NotEnabled);
        }
        let rest = token.strip_prefix(MEMBER_TOKEN_PREFIX).ok_or(AuthError::InvalidToken)?;
        let (claims_hex, mac_hex) = rest.split_once('.').ok_or(AuthError::InvalidToken)?;
        let bytes = from_hex(claims_hex).ok_or(AuthError::InvalidToken)?;
        let mac: [u8; 32] =
            from_hex(mac_hex).and_then(|mac| mac.try_into().ok()).ok_or(AuthError::InvalidToken)?;
        let expected = blake3::keyed_hash(&self.member_key(), &bytes);
        if !constant_time_eq(&mac, expected.as_bytes()) {
            return Err(AuthError::InvalidToken);
        }
        let claims: MemberClaims =
            postcard::from_bytes(&bytes).map_err(|_| AuthError::InvalidToken)?;
        if claims.version != CLAIMS_VERSION || claims.expires_millis < now_millis {
            return Err(AuthError::InvalidToken);
        }
        Ok(claims.member)
    }

    fn issue(&self, name: &str, revision: u64, expires_millis: u64) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::NotEnabled);
        }
        if !self.users.contains_key(name) {
            return Err(AuthError::AuthFailed);
        }
        if revision != self.revision {
            return Err(AuthError::OldRevision);
        }
        let claims =
            Claims { version: CLAIMS_VERSION, user: name.to_string(), revision, expires_millis };
        let bytes = postcard::to_stdvec(&claims).unwrap_or_default();
        Ok(format!("{}.{}", to_hex(&bytes), to_hex(&self.mac(&claims))))
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|held| held.roles.contains(ROOT_ROLE))
    }

    /// Whether `user` may do `kind` on every key of `range`: the union of its roles'
    /// permissions of that kind covers the range (as etcd's interval check).
    pub fn permits(&self, user: &str, range: &KeyRange, kind: PermissionKind) -> bool {
        let Some(held) = self.users.get(user) else { return false };
        if held.roles.contains(ROOT_ROLE) {
            return true;
        }
        let mut intervals: Vec<(Vec<u8>, Option<Vec<u8>>)> = held
            .roles
            .iter()
            .filter_map(|role| self.roles.get(role))
            .flatten()
            .filter(|permission| permission.kind.allows(kind))
            .map(Permission::interval)
            .collect();
        intervals.sort();
        let (start, end) = interval(&range.key, &range.range_end);
        if let Some(end) = &end {
            if *end <= start {
                // An empty range asks for nothing.
                return true;
            }
        }
        // Walk the sorted intervals, extending how far from `start` on is covered.
        let mut covered = start;
        for (from, to) in intervals {
            if from > covered {
                break;
            }
            match to {
                None => return true,
                Some(to) if to > covered => covered = to,
                Some(_) => {}
            }
            if end.as_ref().is_some_and(|end| covered >= *end) {
                return true;
            }
        }
        false
    }

    /// Answers a request that only reads, for `caller` (`None`: authentication is off or the
    /// caller is a member).
    pub(crate) fn read(
        &self,
        request: &AuthRequest,
        caller: Option<&str>,
    ) -> Result<AuthResponse, AuthError> {
        self.require(request, caller)?;
        match request {
            AuthRequest::Status => {
                Ok(AuthResponse::Status { enabled: self.enabled, revision: self.revision })
            }
            AuthRequest::UserGet { name } => match self.users.get(name) {
                Some(user) => Ok(AuthResponse::User(user.roles.iter().cloned().collect())),
                None => Err(AuthError::UserNotFound),
            },
            AuthRequest::UserList => Ok(AuthResponse::Names(self.users.keys().cloned().collect())),
            AuthRequest::RoleGet { name } if name == ROOT_ROLE => {
                let everything = Permission {
                    kind: PermissionKind::ReadWrite,
                    key: Bytes::new(),
                    range_end: Bytes::from_static(&[0]),
                };
                Ok(AuthResponse::Role(vec![everything]))
            }
            AuthRequest::RoleGet { name } => match self.roles.get(name) {
                Some(permissions) => Ok(AuthResponse::Role(permissions.iter().cloned().collect())),
                None => Err(AuthError::RoleNotFound),
            },
            AuthRequest::RoleList => Ok(AuthResponse::Names(self.roles.keys().cloned().collect())),
            AuthRequest::RequireRoot => Ok(AuthResponse::Done),
            AuthRequest::RequirePermission { range, kind } => match caller {
                Some(caller) if self.enabled && !self.permits(caller, range, *kind) => {
                    Err(AuthError::PermissionDenied)
                }
                _ => Ok(AuthResponse::Done),
            },
            AuthRequest::Password { name } => match self.users.get(name) {
                Some(user) => Ok(AuthResponse::Password {
                    hash: user.password_hash.clone(),
                    revision: self.revision,
                }),
                None => Err(AuthError::AuthFailed),
            },
            AuthRequest::Issue { name, revision, expires_millis } => {
                self.issue(name, *revision, *expires_millis).map(AuthResponse::Token)
            }
            AuthRequest::MemberToken { member, expires_millis } => {
                self.issue_member(*member, *expires_millis).map(AuthResponse::Token)
            }
            _ => Err(AuthError::Invalid("a change to the auth store was sent as a read".into())),
        }
    }

    /// Whether `caller` may ask `request`: with authentication on, changes and most reads need
    /// the root role; anyone may ask the status, and users may read and change themselves.
    fn require(&self, request: &AuthRequest, caller: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled || request.is_member_only() {
            // Members' own requests were let in where they were taken (see `Kv::admit`).
            return Ok(());
        }
        let Some(caller) = caller else {
            return match request {
                AuthRequest::Status => Ok(()),
                _ => Err(AuthError::UserEmpty),
            };
        };
        match request {
            AuthRequest::Status => Ok(()),
            AuthRequest::UserGet { name } | AuthRequest::UserChangePassword { name, .. }
                if name == caller =>
            {
                Ok(())
            }
            AuthRequest::RequirePermission { .. } => Ok(()),
            _ if self.is_root(caller) => Ok(()),
            _ => Err(AuthError::PermissionDenied),
        }
    }

    /// Applies a change for `caller` (`None`: authentication is off, or a member's request).
    pub(crate) fn change(
        &mut self,
        request: AuthRequest,
        caller: Option<&str>,
    ) -> Result<AuthResponse, AuthError> {
        if request.is_read_only() {
            return self.read(&request, caller);
        }
        if let AuthRequest::Enable { .. } = request {
            if self.enabled {
                // Enabling what is on changes nothing (etcd answers it so).
                return Ok(AuthResponse::Done);
            }
        } else {
            self.require(&request, caller)?;
        }
        self.apply_change(request)?;
        self.revision += 1;
        Ok(AuthResponse::Done)
    }

    fn apply_change(&mut self, request: AuthRequest) -> Result<(), AuthError> {
        match request {
            AuthRequest::Enable { token_key, jwt_key } => {
                let Some(root) = self.users.get(ROOT_USER) else {
                    return Err(AuthError::RootUserMissing);
                };
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(AuthError::RootRoleMissing);
                }
                self.enabled = true;
                self.token_key = token_key;
                self.jwt_key = jwt_key;
            }
            AuthRequest::Disable => {
                if !self.enabled {
                    return Err(AuthError::NotEnabled);
                }
                self.enabled = false;
            }
            AuthRequest::UserAdd { name, password_hash } => {
                check_name(&name)?;
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserExists);
                }
                if self.users.len() >= ENTRIES_MAX {
                    return Err(AuthError::Invalid(format!("at most {ENTRIES_MAX} users")));
                }
                self.users.insert(name, User { password_hash, roles: BTreeSet::new() });
            }
            AuthRequest::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidManagement);
                }
                self.users.remove(&name).ok_or(AuthError::UserNotFound)?;
            }
            AuthRequest::UserChangePassword { name, password_hash } => {
                let user = self.users.get_mut(&name).ok_or(AuthError::UserNotFound)?;
                user.password_hash = Some(password_hash);
            }
            AuthRequest::UserGrantRole { user, role } => {
                if role != ROOT_ROLE && !self.roles.contains_key(&role) {
                    return Err(AuthError::RoleNotFound);
                }
                let held = self.users.get_mut(&user).ok_or(AuthError::UserNotFound)?;
                if held.roles.len() >= GRANTS_MAX {
                    return Err(AuthError::Invalid(format!("at most {GRANTS_MAX} roles a user")));
                }
                held.roles.insert(role);
            }
            AuthRequest::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidManagement);
                }
                let held = self.users.get_mut(&user).ok_or(AuthError::UserNotFound)?;
                if !held.roles.remove(&role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthRequest::RoleAdd { name } => {
                check_name(&name)?;
                if self.roles.contains_key(&name) {
                    return Err(AuthError::RoleExists);
                }
                if self.roles.len() >= ENTRIES_MAX {
                    return Err(AuthError::Invalid(format!("at most {ENTRIES_MAX} roles")));
                }
                self.roles.insert(name, BTreeSet::new());
            }
            AuthRequest::RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidManagement);
                }
                self.roles.remove(&name).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(&name);
                }
            }
            AuthRequest::RoleGrantPermission { name, permission } => {
                if permission.key.is_empty() && permission.range_end.as_ref() != [0] {
                    return Err(AuthError::Invalid("permission of an empty key".into()));
                }
                let permissions = self.roles.get_mut(&name).ok_or(AuthError::RoleNotFound)?;
                // Granting a range again replaces its kind (etcd's rule).
                permissions.retain(|held| {
                    !(held.key == permission.key && held.range_end == permission.range_end)
                });
                if permissions.len() >= GRANTS_MAX {
                    return Err(AuthError::Invalid(format!(
                        "at most {GRANTS_MAX} permissions a role"
                    )));
                }
                permissions.insert(permission);
            }
            AuthRequest::RoleRevokePermission { name, key, range_end } => {
                let permissions = self.roles.get_mut(&name).ok_or(AuthError::RoleNotFound)?;
                let before = permissions.len();
                permissions.retain(|held| !(held.key == key && held.range_end == range_end));
                if permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
            _ => return Err(AuthError::Invalid("a read was sent as a change".into())),
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty() {
        return Err(AuthError::Invalid("name is empty".into()));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(AuthError::Invalid(format!("a name is longer than {NAME_BYTES_MAX} bytes")));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_root() -> AuthStore {
        let mut store = AuthStore::default();
        let add = AuthRequest::UserAdd { name: "root".into(), password_hash: None };
        store.change(add, None).expect("adds root");
        let grant = AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() };
        store.change(grant, None).expect("grants root");
        store
    }

    fn permission(kind: PermissionKind, key: &str, range_end: &[u8]) -> Permission {
        Permission {
            kind,
            key: Bytes::from(key.to_string()),
            range_end: Bytes::from(range_end.to_vec()),
        }
    }

    #[test]
    fn enabling_needs_root_with_its_role() {
        let mut store = AuthStore::default();
        let enable = AuthRequest::Enable { token_key: [7; 32], jwt_key: None };
        assert_eq!(store.change(enable.clone(), None), Err(AuthError::RootUserMissing));
        store
            .change(AuthRequest::UserAdd { name: "root".into(), password_hash: None }, None)
            .expect("adds root");
        assert_eq!(store.change(enable.clone(), None), Err(AuthError::RootRoleMissing));
        let grant = AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() };
        store.change(grant, None).expect("grants");
        assert_eq!(store.change(enable, None), Ok(AuthResponse::Done));
        assert!(store.enabled());
        // Root cannot be locked out while enabled.
        let delete = AuthRequest::UserDelete { name: "root".into() };
        assert_eq!(store.change(delete, Some("root")), Err(AuthError::InvalidManagement));
    }

    #[test]
    fn tokens_verify_only_with_the_key_in_time_and_at_the_revision() {
        let mut store = store_with_root();
        store
            .change(AuthRequest::Enable { token_key: [9; 32], jwt_key: None }, None)
            .expect("enables");
        let revision = store.revision();
        let token = store.issue("root", revision, 1_000).expect("issues");
        assert_eq!(store.verify(&token, 999, false), Ok("root"));
        assert_eq!(store.verify(&token, 1_001, false), Err(AuthError::InvalidToken), "expired");
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(store.verify(&forged, 0, false), Err(AuthError::InvalidToken), "bad MAC");
        assert_eq!(store.verify("garbage", 0, false), Err(AuthError::InvalidToken));
        let mut other = store.clone();
        other.token_key = [1; 32];
        assert_eq!(other.verify(&token, 0, false), Err(AuthError::InvalidToken), "another key");
        store.change(AuthRequest::RoleAdd { name: "r".into() }, Some("root")).expect("adds");
        assert_eq!(store.verify(&token, 0, false), Err(AuthError::OldRevision));
        assert_eq!(store.issue("root", revision, 1), Err(AuthError::OldRevision));
    }

    #[test]
    fn jwts_verify_only_under_the_replicated_key() {
        let mut store = store_with_root();
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let public = key.verifying_key().to_bytes();
        let enable = AuthRequest::Enable { token_key: [9; 32], jwt_key: Some(public) };
        store.change(enable, None).expect("enables");
        let token = jwt::sign(&key, "root", store.revision(), 5_000);
        assert_eq!(token_expiry_millis(&token), Some(5_000));
        assert_eq!(store.verify(&token, 4_000, true), Ok("root"));
        assert_eq!(store.verify(&token, 6_000, true), Err(AuthError::InvalidToken), "expired");
        let other = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let forged = jwt::sign(&other, "root", store.revision(), 5_000);
        assert_eq!(store.verify(&forged, 0, true), Err(AuthError::InvalidToken));
        let mut without = store.clone();
        without.jwt_key = None;
        assert_eq!(without.verify(&token, 0, true), Err(AuthError::InvalidToken));
    }

    #[test]
    fn permissions_cover_ranges_by_their_union() {
        let mut store = store_with_root();
        let root = Some("root");
        store
            .change(AuthRequest::UserAdd { name: "u".into(), password_hash: None }, root)
            .expect("adds");
        store.change(AuthRequest::RoleAdd { name: "r".into() }, root).expect("adds");
        let grant = |permission| AuthRequest::RoleGrantPermission { name: "r".into(), permission };
        store.change(grant(permission(PermissionKind::Read, "a", b"c")), root).expect("grants");
        store.change(grant(permission(PermissionKind::ReadWrite, "c", b"e")), root).expect("ok");
        store
            .change(AuthRequest::UserGrantRole { user: "u".into(), role: "r".into() }, root)
            .expect("grants");
        let range = |key: &str, end: &[u8]| KeyRange {
            key: Bytes::from(key.to_string()),
            range_end: Bytes::from(end.to_vec()),
        };
        assert!(store.permits("u", &range("a", b"e"), PermissionKind::Read), "the union");
        assert!(store.permits("u", &range("b", b""), PermissionKind::Read));
        assert!(!store.permits("u", &range("b", b""), PermissionKind::Write));
        assert!(store.permits("u", &range("d", b""), PermissionKind::Write));
        assert!(!store.permits("u", &range("a", b"f"), PermissionKind::Read), "past the end");
        assert!(!store.permits("u", &range("a", &[0]), PermissionKind::Read), "unbounded");
        assert!(!store.permits("u", &range("e", b""), PermissionKind::Read));
        assert!(store.permits("root", &range("z", &[0]), PermissionKind::Write));
        assert!(!store.permits("nobody", &range("a", b""), PermissionKind::Read));
        let revoke = AuthRequest::RoleRevokePermission {
            name: "r".into(),
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"c"),
        };
        store.change(revoke.clone(), root).expect("revokes");
        assert!(!store.permits("u", &range("b", b""), PermissionKind::Read));
        assert_eq!(store.change(revoke, root), Err(AuthError::PermissionNotGranted));
    }

    #[test]
    fn only_root_manages_once_enabled_and_users_see_themselves() {
        let mut store = store_with_root();
        store
            .change(AuthRequest::UserAdd { name: "u".into(), password_hash: None }, None)
            .expect("adds");
        store
            .change(AuthRequest::Enable { token_key: [3; 32], jwt_key: None }, None)
            .expect("enables");
        let add = AuthRequest::RoleAdd { name: "r".into() };
        assert_eq!(store.change(add.clone(), None), Err(AuthError::UserEmpty));
        assert_eq!(store.change(add.clone(), Some("u")), Err(AuthError::PermissionDenied));
        assert_eq!(store.change(add, Some("root")), Ok(AuthResponse::Done));
        let get = AuthRequest::UserGet { name: "u".into() };
        assert!(store.read(&get, Some("u")).is_ok());
        let other = AuthRequest::UserGet { name: "root".into() };
        assert_eq!(store.read(&other, Some("u")), Err(AuthError::PermissionDenied));
        assert!(store.read(&AuthRequest::Status, None).is_ok());
    }
}
