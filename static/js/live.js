// A WebSocket that reconnects by itself and hands each event to the handler named by
// its "type". onopen(socket) runs on every (re)connection, so a page can ask for what
// it missed. Close codes the server uses (jobs/events.py) stop the reconnecting:
// 4404, the object is not there for this user; 4403, this user's access was taken away,
// which the page's status region (templates/base.html) says.
//
// Events sent to a group carry its sequence number ("seq", with "group" where a socket
// hears several). A number skipped means an event was lost on the way (channels-redis
// drops messages for a socket that falls behind): the socket stops handing that group's
// events on and calls onGap(socket, group), and the page asks for a refill from the
// database. The server answers with the state and a {"type": "sync", group, seq}: every
// event up to seq is in that state, so those still arriving are dropped.
const Live = {
  ACCESS_LOST: 4403,
  NOT_FOUND: 4404,

  connect(path, handlers, onopen, onGap) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${window.location.host}${path}`;
    let delay = 500;
    let closedForGood = false;
    let last = {}; // group -> the last number handed on (or covered by a sync)
    let refilling = {}; // group -> true while a refill is on its way

    function sequenced(event, socket) {
      const group = event.group || "";
      if (event.type === "sync") {
        last[group] = last[group] === undefined ? event.seq : Math.max(last[group], event.seq);
        delete refilling[group];
        return false;
      }
      // An answer of the server's own, not a group's; or a page that refills nothing.
      if (typeof event.seq !== "number" || !onGap) return true;
      if (refilling[group]) return false;
      if (last[group] === undefined) return true; // before the socket's first sync: the refill on open covers it
      if (event.seq <= last[group]) return false;
      if (event.seq === last[group] + 1) {
        last[group] = event.seq;
        return true;
      }
      refilling[group] = true;
      document.body.dataset.refills = String(Number(document.body.dataset.refills || 0) + 1);
      if (onGap) onGap(socket, event.group);
      return false;
    }

    function open() {
      const socket = new WebSocket(url);
      socket.onopen = () => {
        delay = 500;
        last = {};
        refilling = {};
        document.body.dataset.live = "connected";
        if (onopen) onopen(socket);
      };
      socket.onmessage = (message) => {
        const event = JSON.parse(message.data);
        if (!sequenced(event, socket)) {
          if (event.type === "sync" && handlers.sync) handlers.sync(event);
          return;
        }
        const handler = handlers[event.type];
        if (handler) handler(event);
      };
      socket.onclose = (close) => {
        document.body.dataset.live = "disconnected";
        if (close.code === Live.ACCESS_LOST) {
          closedForGood = true;
          document.body.dataset.live = "access-lost";
          const status = document.getElementById("live-status");
          if (status) {
            status.textContent = "You no longer have access to this page.";
            status.hidden = false;
          }
        }
        // Retrying cannot help: the answer would be the same.
        if (close.code === Live.NOT_FOUND || closedForGood) return;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
    return { close() { closedForGood = true; } };
  },
};
