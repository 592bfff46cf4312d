//! etcd's Auth service, and who makes each request.
//!
//! The users, roles and permissions live in the replicated store ([`lockstep_kv::auth`]);
//! this is what a member adds around them: it hashes passwords before it proposes a user
//! (argon2id, salted; the log never holds a password), checks a password against its hash off
//! the replica thread when a client authenticates (at most [`HASHING_MAX`] at once, and
//! slower and slower for an address that keeps failing), and has its replica issue a token.
//! A request carries its token in the gRPC metadata (`token`, as etcd's clients send it);
//! with none, the common name of the client's certificate names the user (etcd's
//! `--client-cert-auth`), for whom this member has a token issued. The token goes to the
//! store with the request ([`Request::As`]), which checks it where the request is taken and
//! again where it is applied.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use bytes::Bytes;
use lockstep_kv::{
    self as kv, AuthError, AuthRequest, AuthResponse, Authorized, KvError, Request, Response,
};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::gateway::{kv_status, Gateway};
use crate::proto::authpb;
use crate::proto::etcdserverpb as pb;
use crate::rpc::auth_server::Auth;
use crate::Peer;

/// Passwords checked or hashed at once on one member; more wait their turn.
pub const HASHING_MAX: usize = 2;

/// How long a token lives by default (etcd's `--auth-token-ttl` default).
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// Failed authentications from one address, within [`FAILURES_REMEMBERED`], before the next
/// attempts from it are slowed down.
const FAILURES_FREE: u32 = 3;

/// How long a member's own token lives (one is issued for each request it makes so).
const MEMBER_TOKEN_TTL: Duration = Duration::from_secs(60);

/// How long a failed authentication counts against its address.
const FAILURES_REMEMBERED: Duration = Duration::from_secs(300);

/// The longest an attempt from a failing address is held back.
const DELAY_MAX: Duration = Duration::from_secs(5);

/// Addresses remembered for failing; past it the oldest is forgotten.
const ADDRESSES_MAX: usize = 10_000;

/// A member's authentication state: tokens issued for certificates, failures by address, and
/// the bound on password hashing.
pub(crate) struct AuthState {
    /// Tokens issued for the users client certificates name, with their expiry.
    certificate_tokens: Mutex<BTreeMap<String, (String, u64)>>,
    /// Failed authentications by address: how many, and the last one.
    failures: Mutex<BTreeMap<IpAddr, (u32, Instant)>>,
    hashing: tokio::sync::Semaphore,
}

impl Default for AuthState {
    fn default() -> AuthState {
        AuthState {
            certificate_tokens: Mutex::default(),
            failures: Mutex::default(),
            hashing: tokio::sync::Semaphore::new(HASHING_MAX),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Who makes a request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Caller {
    /// The token it sent.
    token: Option<String>,
    /// The user its client certificate names (used when it sent no token).
    certificate: Option<String>,
}

impl Caller {
    fn is_anonymous(&self) -> bool {
        self.token.is_none() && self.certificate.is_none()
    }

    /// The user it names (its token's, read unchecked: for a caller already checked), if any.
    pub(crate) fn user(&self) -> Option<String> {
        match &self.token {
            Some(token) => kv::auth::token_user(token),
            None => self.certificate.clone(),
        }
    }
}

/// The gRPC status etcd answers for each of its auth errors (codes and messages as etcd's:
/// its clients recognize errors by their message).
pub(crate) fn auth_status(error: &AuthError) -> Status {
    let message = format!("etcdserver: {error}");
    match error {
        AuthError::PermissionDenied => Status::permission_denied(message),
        AuthError::InvalidToken => Status::unauthenticated(message),
        AuthError::UserEmpty
        | AuthError::OldRevision
        | AuthError::AuthFailed
        | AuthError::InvalidManagement
        | AuthError::Invalid(_) => Status::invalid_argument(message),
        AuthError::UserExists
        | AuthError::UserNotFound
        | AuthError::RoleExists
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::RootUserMissing
        | AuthError::RootRoleMissing
        | AuthError::NotEnabled => Status::failed_precondition(message),
    }
}

fn is_old_revision(status: &Status) -> bool {
    status.message() == format!("etcdserver: {}", AuthError::OldRevision)
}

/// Hashes `password` with a new random salt (argon2id, the crate's default cost).
fn hash_password(password: &str) -> Result<String, Status> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|error| Status::internal(format!("no random salt: {error}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|error| Status::internal(format!("salt: {error}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Status::internal(format!("hashing a password: {error}")))
}

/// Whether `password` matches `hash` (a PHC string; one that does not parse matches nothing).
fn password_matches(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

impl Gateway {
    /// Who makes `request`: the token in its metadata, else the user its client certificate
    /// names. A token that has expired by this member's clock is refused here.
    pub(crate) fn caller<T>(&self, request: &GrpcRequest<T>) -> Result<Caller, Status> {
        let metadata = request.metadata();
        let token = metadata
            .get("token")
            .or_else(|| metadata.get("authorization"))
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        if let Some(token) = &token {
            match kv::auth::token_expiry_millis(token) {
                Some(expires) if expires >= now_millis() => {}
                _ => return Err(auth_status(&AuthError::InvalidToken)),
            }
        }
        let certificate =
            request.extensions().get::<Peer>().and_then(|peer| peer.common_name.clone());
        Ok(Caller { token, certificate })
    }

    /// `request` as `caller` makes it: with its token, or one issued for its certificate's
    /// user while authentication is on; as it is otherwise.
    pub(crate) async fn wrap(&self, caller: &Caller, request: Request) -> Result<Request, Status> {
        Ok(match self.token_of(caller).await? {
            Some(token) => Request::As(Box::new(Authorized { token, request })),
            None => request,
        })
    }

    /// The token `caller` makes requests with: its own, or one issued for its certificate's
    /// user while authentication is on.
    pub(crate) async fn token_of(&self, caller: &Caller) -> Result<Option<String>, Status> {
        match (&caller.token, &caller.certificate) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(user)) => self.certificate_token(user).await,
            (None, None) => Ok(None),
        }
    }

    /// A token for the user a client certificate names, issued by this member's replica and
    /// kept until shortly before it expires; `None` while authentication is off or if no such
    /// user exists (the request then goes without one, and is refused if one is needed).
    async fn certificate_token(&self, user: &str) -> Result<Option<String>, Status> {
        let state = self.auth_state();
        let now = now_millis();
        let ttl_millis = self.config().tokens.ttl.as_millis() as u64;
        if let Some((token, expires)) = lock(&state.certificate_tokens).get(user) {
            if *expires > now + ttl_millis / 2 {
                return Ok(Some(token.clone()));
            }
        }
        let Response::Auth(AuthResponse::Status { enabled, revision }) =
            self.read_local(Request::Auth(AuthRequest::Status)).await?.response
        else {
            return Ok(None);
        };
        if !enabled {
            return Ok(None);
        }
        let expires_millis = now + ttl_millis;
        match self.issue(user, revision, expires_millis).await? {
            Some(token) => {
                let mut tokens = lock(&state.certificate_tokens);
                if tokens.len() >= ADDRESSES_MAX {
                    tokens.clear();
                }
                tokens.insert(user.to_string(), (token.clone(), expires_millis));
                Ok(Some(token))
            }
            None => Ok(None),
        }
    }

    /// A token for `user` at the auth store's `revision`: a JWT signed here if this member
    /// issues them, else one issued by its replica (`None` if it refuses: no such user, or
    /// the store moved on).
    async fn issue(
        &self,
        user: &str,
        revision: u64,
        expires_millis: u64,
    ) -> Result<Option<String>, Status> {
        if let Some(key) = &self.config().tokens.jwt {
            return Ok(Some(kv::auth::jwt::sign(key, user, revision, expires_millis)));
        }
        let issue = AuthRequest::Issue { name: user.to_string(), revision, expires_millis };
        match self.read_local(Request::Auth(issue)).await?.response {
            Response::Auth(AuthResponse::Token(token)) => Ok(Some(token)),
            _ => Ok(None),
        }
    }

    /// A token for this member's own requests through other members, issued by its replica
    /// (`None` while authentication is off there, or if it is not in this process).
    pub(crate) async fn member_token(&self) -> Option<String> {
        let issue = AuthRequest::MemberToken {
            member: self.config().member_id,
            expires_millis: now_millis() + MEMBER_TOKEN_TTL.as_millis() as u64,
        };
        match self.read_local(Request::Auth(issue)).await.ok()?.response {
            Response::Auth(AuthResponse::Token(token)) => Some(token),
            _ => None,
        }
    }

    /// Forgets the token of a certificate's user (the store moved on from its revision).
    fn forget_certificate_token(&self, caller: &Caller) {
        if let (None, Some(user)) = (&caller.token, &caller.certificate) {
            lock(&self.auth_state().certificate_tokens).remove(user);
        }
    }

    /// A write through the log as `caller` makes it.
    pub(crate) async fn write_as(
        &self,
        caller: &Caller,
        request: Request,
    ) -> Result<kv::Answer, Status> {
        if caller.is_anonymous() {
            return self.write(request).await;
        }
        let outcome = self.write(self.wrap(caller, request.clone()).await?).await;
        match outcome {
            Err(status) if is_old_revision(&status) && caller.token.is_none() => {
                self.forget_certificate_token(caller);
                self.write(self.wrap(caller, request).await?).await
            }
            outcome => outcome,
        }
    }

    /// A read as `caller` makes it (see [`Gateway::read`]).
    pub(crate) async fn read_as(
        &self,
        caller: &Caller,
        request: Request,
        serializable: bool,
    ) -> Result<kv::Answer, Status> {
        if caller.is_anonymous() {
            return self.read(request, serializable).await;
        }
        let outcome = self.read(self.wrap(caller, request.clone()).await?, serializable).await;
        match outcome {
            Err(status) if is_old_revision(&status) && caller.token.is_none() => {
                self.forget_certificate_token(caller);
                self.read(self.wrap(caller, request).await?, serializable).await
            }
            outcome => outcome,
        }
    }

    /// Refuses unless `caller` holds the root role (or authentication is off).
    pub(crate) async fn require_root(&self, caller: &Caller) -> Result<(), Status> {
        self.read_as(caller, Request::Auth(AuthRequest::RequireRoot), true).await.map(|_| ())
    }

    /// Refuses unless `caller` may do `kind` on `range` (or authentication is off).
    pub(crate) async fn require_permission(
        &self,
        caller: &Caller,
        range: kv::KeyRange,
        kind: kv::PermissionKind,
    ) -> Result<(), Status> {
        let request = Request::Auth(AuthRequest::RequirePermission { range, kind });
        self.read_as(caller, request, true).await.map(|_| ())
    }

    /// Holds back an attempt from an address that failed more than [`FAILURES_FREE`] times
    /// lately: twice as long for each failure more, up to [`DELAY_MAX`].
    async fn slow_down(&self, address: Option<IpAddr>) {
        let Some(address) = address else { return };
        let failed = {
            let mut failures = lock(&self.auth_state().failures);
            match failures.get(&address) {
                Some((_, last)) if last.elapsed() > FAILURES_REMEMBERED => {
                    failures.remove(&address);
                    0
                }
                Some((count, _)) => *count,
                None => 0,
            }
        };
        if failed >= FAILURES_FREE {
            let doublings = (failed - FAILURES_FREE).min(16);
            let delay = (Duration::from_millis(100) * (1 << doublings)).min(DELAY_MAX);
            metrics::counter!("lockstep_auth_slowed_total").increment(1);
            tokio::time::sleep(delay).await;
        }
    }

    fn record_failure(&self, address: Option<IpAddr>) {
        metrics::counter!("lockstep_auth_failures_total").increment(1);
        let Some(address) = address else { return };
        let mut failures = lock(&self.auth_state().failures);
        if failures.len() >= ADDRESSES_MAX && !failures.contains_key(&address) {
            let oldest = failures.iter().min_by_key(|(_, (_, last))| *last).map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(address).or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    }

    /// Runs `work` (hashing or checking a password) on a blocking thread, at most
    /// [`HASHING_MAX`] at once on this member.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let _turn = tokio::time::timeout(self.timeout(), self.auth_state().hashing.acquire())
            .await
            .map_err(|_| Status::unavailable("etcdserver: too many password checks; retry"))?
            .map_err(|_| Status::unavailable("etcdserver: stopping"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| Status::internal(format!("a password check failed: {error}")))
    }

    /// Checks a user's password and issues a token.
    async fn authenticate_user(
        &self,
        name: &str,
        password: String,
        address: Option<IpAddr>,
    ) -> Result<(String, u64), Status> {
        self.slow_down(address).await;
        // A few rounds: the store may move on between the check and the issue.
        for _ in 0..3 {
            let read = Request::Auth(AuthRequest::Password { name: name.to_string() });
            let answer = self.read_local_linearizable(read).await?;
            let (hash, revision) = match answer.response {
                Response::Auth(AuthResponse::Password { hash, revision }) => (hash, revision),
                Response::Error(KvError::Auth(AuthError::AuthFailed)) => {
                    self.record_failure(address);
                    return Err(auth_status(&AuthError::AuthFailed));
                }
                Response::Error(error) => return Err(kv_status(&error)),
                _ => return Err(Status::internal("lockstep: not a password")),
            };
            let Some(hash) = hash else {
                self.record_failure(address);
                return Err(auth_status(&AuthError::AuthFailed));
            };
            let password = password.clone();
            if !self.hashing(move || password_matches(&password, &hash)).await? {
                self.record_failure(address);
                return Err(auth_status(&AuthError::AuthFailed));
            }
            let expires_millis = now_millis() + self.config().tokens.ttl.as_millis() as u64;
            match self.issue(name, revision, expires_millis).await? {
                Some(token) => {
                    if let Some(address) = address {
                        lock(&self.auth_state().failures).remove(&address);
                    }
                    return Ok((token, revision));
                }
                // The store moved on (or the user went) since the hash was read: again.
                None => continue,
            }
        }
        Err(Status::unavailable("etcdserver: the auth store kept changing; retry"))
    }

    /// A change to the auth store as `caller` makes it.
    async fn auth_change(&self, caller: &Caller, request: AuthRequest) -> Result<u64, Status> {
        let answer = self.write_as(caller, Request::Auth(request)).await?;
        match answer.response {
            Response::Auth(_) => Ok(answer.revision),
            _ => Err(Status::internal("lockstep: the auth store answered otherwise")),
        }
    }

    /// A linearizable read of the auth store as `caller` makes it.
    async fn auth_read(
        &self,
        caller: &Caller,
        request: AuthRequest,
    ) -> Result<(AuthResponse, u64), Status> {
        let answer = self.read_as(caller, Request::Auth(request), false).await?;
        match answer.response {
            Response::Auth(response) => Ok((response, answer.revision)),
            _ => Err(Status::internal("lockstep: the auth store answered otherwise")),
        }
    }

    /// A password's hash, from what the request carries: hashed here from `password`, or
    /// `hashed` if it is an argon2 hash; `None` with `no_password`.
    async fn password_hash(
        &self,
        password: String,
        hashed: String,
        no_password: bool,
    ) -> Result<Option<String>, Status> {
        if no_password {
            return Ok(None);
        }
        if !hashed.is_empty() {
            return match PasswordHash::new(&hashed) {
                Ok(parsed) if parsed.algorithm.as_str().starts_with("argon2") => Ok(Some(hashed)),
                _ => Err(Status::invalid_argument(
                    "etcdserver: a hashed password must be an argon2 PHC string",
                )),
            };
        }
        if password.is_empty() {
            return Err(Status::invalid_argument("etcdserver: password is empty"));
        }
        self.hashing(move || hash_password(&password)).await?.map(Some)
    }
}

fn permission_in(permission: Option<authpb::Permission>) -> Result<kv::Permission, Status> {
    let permission =
        permission.ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
    let kind = match authpb::permission::Type::try_from(permission.perm_type) {
        Ok(authpb::permission::Type::Read) => kv::PermissionKind::Read,
        Ok(authpb::permission::Type::Write) => kv::PermissionKind::Write,
        Ok(authpb::permission::Type::Readwrite) => kv::PermissionKind::ReadWrite,
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown permission type")),
    };
    Ok(kv::Permission {
        kind,
        key: Bytes::from(permission.key),
        range_end: Bytes::from(permission.range_end),
    })
}

fn permission_out(permission: kv::Permission) -> authpb::Permission {
    let perm_type = match permission.kind {
        kv::PermissionKind::Read => authpb::permission::Type::Read,
        kv::PermissionKind::Write => authpb::permission::Type::Write,
        kv::PermissionKind::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: perm_type as i32,
        key: permission.key.to_vec(),
        range_end: permission.range_end.to_vec(),
    }
}

macro_rules! change {
    ($self:ident, $request:ident, $response:ident, |$inner:ident| $make:expr) => {{
        let caller = $self.caller(&$request)?;
        let $inner = $request.into_inner();
        let revision = $self.auth_change(&caller, $make).await?;
        Ok(GrpcResponse::new(pb::$response { header: $self.header(revision) }))
    }};
}

#[tonic::async_trait]
impl Auth for Gateway {
    /// Proposed by the leader's own process (the token key must come from a member, never a
    /// client): a member that does not lead passes the request on to the leader's etcd port.
    async fn auth_enable(
        &self,
        request: GrpcRequest<pb::AuthEnableRequest>,
    ) -> Result<GrpcResponse<pb::AuthEnableResponse>, Status> {
        if self.leading_term().is_none() {
            if request.metadata().contains_key(crate::streams::FORWARDED) {
                return Err(crate::gateway::not_leading());
            }
            let caller = self.caller(&request)?;
            let mut passed = GrpcRequest::new(request.into_inner());
            passed.metadata_mut().insert(
                crate::streams::FORWARDED,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            if let Some(token) = self.token_of(&caller).await? {
                if let Ok(value) = tonic::metadata::MetadataValue::try_from(token.as_str()) {
                    passed.metadata_mut().insert("token", value);
                }
            }
            let mut leader = crate::rpc::auth_client::AuthClient::new(self.leader_channel().await?);
            return leader.auth_enable(passed).await;
        }
        let jwt_key = self.config().tokens.jwt.as_ref().map(|key| key.verifying_key().to_bytes());
        let mut token_key = [0u8; 32];
        getrandom::fill(&mut token_key)
            .map_err(|error| Status::internal(format!("no random token key: {error}")))?;
        let caller = self.caller(&request)?;
        let enable = Request::Auth(AuthRequest::Enable { token_key, jwt_key });
        let answer = self.write_local(self.wrap(&caller, enable).await?).await?;
        Ok(GrpcResponse::new(pb::AuthEnableResponse { header: self.header(answer.revision) }))
    }

    async fn auth_disable(
        &self,
        request: GrpcRequest<pb::AuthDisableRequest>,
    ) -> Result<GrpcResponse<pb::AuthDisableResponse>, Status> {
        change!(self, request, AuthDisableResponse, |_inner| AuthRequest::Disable)
    }

    async fn auth_status(
        &self,
        request: GrpcRequest<pb::AuthStatusRequest>,
    ) -> Result<GrpcResponse<pb::AuthStatusResponse>, Status> {
        let caller = self.caller(&request)?;
        match self.auth_read(&caller, AuthRequest::Status).await? {
            (AuthResponse::Status { enabled, revision: auth_revision }, revision) => {
                Ok(GrpcResponse::new(pb::AuthStatusResponse {
                    header: self.header(revision),
                    enabled,
                    auth_revision,
                }))
            }
            _ => Err(Status::internal("lockstep: not the auth status")),
        }
    }

    async fn authenticate(
        &self,
        request: GrpcRequest<pb::AuthenticateRequest>,
    ) -> Result<GrpcResponse<pb::AuthenticateResponse>, Status> {
        let address = request.extensions().get::<Peer>().and_then(|peer| peer.address);
        let request = request.into_inner();
        let (enabled, revision) =
            match self.auth_read(&Caller::default(), AuthRequest::Status).await? {
                (AuthResponse::Status { enabled, .. }, revision) => (enabled, revision),
                _ => return Err(Status::internal("lockstep: not the auth status")),
            };
        if !enabled {
            return Err(auth_status(&AuthError::NotEnabled));
        }
        let address = address.map(|address| address.ip());
        let (token, _) = self.authenticate_user(&request.name, request.password, address).await?;
        Ok(GrpcResponse::new(pb::AuthenticateResponse { header: self.header(revision), token }))
    }

    async fn user_add(
        &self,
        request: GrpcRequest<pb::AuthUserAddRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserAddResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let no_password = request.options.is_some_and(|options| options.no_password);
        let password_hash =
            self.password_hash(request.password, request.hashed_password, no_password).await?;
        let add = AuthRequest::UserAdd { name: request.name, password_hash };
        let revision = self.auth_change(&caller, add).await?;
        Ok(GrpcResponse::new(pb::AuthUserAddResponse { header: self.header(revision) }))
    }

    async fn user_get(
        &self,
        request: GrpcRequest<pb::AuthUserGetRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        match self.auth_read(&caller, AuthRequest::UserGet { name }).await? {
            (AuthResponse::User(roles), revision) => {
                Ok(GrpcResponse::new(pb::AuthUserGetResponse {
                    header: self.header(revision),
                    roles,
                }))
            }
            _ => Err(Status::internal("lockstep: not a user")),
        }
    }

    async fn user_list(
        &self,
        request: GrpcRequest<pb::AuthUserListRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserListResponse>, Status> {
        let caller = self.caller(&request)?;
        match self.auth_read(&caller, AuthRequest::UserList).await? {
            (AuthResponse::Names(users), revision) => {
                Ok(GrpcResponse::new(pb::AuthUserListResponse {
                    header: self.header(revision),
                    users,
                }))
            }
            _ => Err(Status::internal("lockstep: not a list of users")),
        }
    }

    async fn user_delete(
        &self,
        request: GrpcRequest<pb::AuthUserDeleteRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserDeleteResponse>, Status> {
        change!(self, request, AuthUserDeleteResponse, |inner| AuthRequest::UserDelete {
            name: inner.name
        })
    }

    async fn user_change_password(
        &self,
        request: GrpcRequest<pb::AuthUserChangePasswordRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let Some(password_hash) =
            self.password_hash(request.password, request.hashed_password, false).await?
        else {
            return Err(Status::invalid_argument("etcdserver: password is empty"));
        };
        let change = AuthRequest::UserChangePassword { name: request.name, password_hash };
        let revision = self.auth_change(&caller, change).await?;
        Ok(GrpcResponse::new(pb::AuthUserChangePasswordResponse { header: self.header(revision) }))
    }

    async fn user_grant_role(
        &self,
        request: GrpcRequest<pb::AuthUserGrantRoleRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserGrantRoleResponse>, Status> {
        change!(self, request, AuthUserGrantRoleResponse, |inner| AuthRequest::UserGrantRole {
            user: inner.user,
            role: inner.role
        })
    }

    async fn user_revoke_role(
        &self,
        request: GrpcRequest<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserRevokeRoleResponse>, Status> {
        change!(self, request, AuthUserRevokeRoleResponse, |inner| AuthRequest::UserRevokeRole {
            user: inner.name,
            role: inner.role
        })
    }

    async fn role_add(
        &self,
        request: GrpcRequest<pb::AuthRoleAddRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleAddResponse>, Status> {
        change!(self, request, AuthRoleAddResponse, |inner| AuthRequest::RoleAdd {
            name: inner.name
        })
    }

    async fn role_get(
        &self,
        request: GrpcRequest<pb::AuthRoleGetRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().role;
        match self.auth_read(&caller, AuthRequest::RoleGet { name }).await? {
            (AuthResponse::Role(permissions), revision) => {
                Ok(GrpcResponse::new(pb::AuthRoleGetResponse {
                    header: self.header(revision),
                    perm: permissions.into_iter().map(permission_out).collect(),
                }))
            }
            _ => Err(Status::internal("lockstep: not a role")),
        }
    }

    async fn role_list(
        &self,
        request: GrpcRequest<pb::AuthRoleListRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleListResponse>, Status> {
        let caller = self.caller(&request)?;
        match self.auth_read(&caller, AuthRequest::RoleList).await? {
            (AuthResponse::Names(roles), revision) => {
                Ok(GrpcResponse::new(pb::AuthRoleListResponse {
                    header: self.header(revision),
                    roles,
                }))
            }
            _ => Err(Status::internal("lockstep: not a list of roles")),
        }
    }

    async fn role_delete(
        &self,
        request: GrpcRequest<pb::AuthRoleDeleteRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleDeleteResponse>, Status> {
        change!(self, request, AuthRoleDeleteResponse, |inner| AuthRequest::RoleDelete {
            name: inner.role
        })
    }

    async fn role_grant_permission(
        &self,
        request: GrpcRequest<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let permission = permission_in(request.perm)?;
        let grant = AuthRequest::RoleGrantPermission { name: request.name, permission };
        let revision = self.auth_change(&caller, grant).await?;
        Ok(GrpcResponse::new(pb::AuthRoleGrantPermissionResponse { header: self.header(revision) }))
    }

    async fn role_revoke_permission(
        &self,
        request: GrpcRequest<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleRevokePermissionResponse>, Status> {
        change!(self, request, AuthRoleRevokePermissionResponse, |inner| {
            AuthRequest::RoleRevokePermission {
                name: inner.role,
                key: Bytes::from(inner.key),
                range_end: Bytes::from(inner.range_end),
            }
        })
    }
}
