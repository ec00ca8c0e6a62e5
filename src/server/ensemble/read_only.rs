//! Read-only sessions (`readonlymode.enabled`): local to a server cut off from its quorum.

use super::*;

impl Ensemble {
    pub(super) fn read_only_session(
        &mut self,
        connection: ConnectionRef,
        timeout_ms: i32,
        password: [u8; 16],
    ) -> ConnectResult {
        let session_id = self.next_read_only_session;
        self.next_read_only_session += 1;
        self.read_only_sessions.insert(session_id, connection);
        ConnectResult::ReadOnly {
            session_id,
            timeout_ms: self.applied.negotiate_timeout(timeout_ms),
            password,
        }
    }

    /// Back in the quorum: read-only clients reconnect to get read-write sessions.
    pub(super) fn end_read_only_sessions(&mut self) {
        let connections: Vec<ConnectionRef> =
            self.read_only_sessions.drain().map(|(_, c)| c).collect();
        for c in connections {
            self.close(c);
        }
    }
}
