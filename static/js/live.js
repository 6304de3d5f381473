// A WebSocket that reconnects by itself and hands each event to the handler named by
// its "type". onopen(socket) runs on every (re)connection, so a page can ask for what
// it missed. Close codes the server uses (jobs/events.py) stop the reconnecting:
// 4404, the object is not there for this user; 4403, this user's access was taken away,
// which the page's status region (templates/base.html) says.
const Live = {
  ACCESS_LOST: 4403,
  NOT_FOUND: 4404,

  connect(path, handlers, onopen) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${window.location.host}${path}`;
    let delay = 500;
    let closedForGood = false;

    function open() {
      const socket = new WebSocket(url);
      socket.onopen = () => {
        delay = 500;
        document.body.dataset.live = "connected";
        if (onopen) onopen(socket);
      };
      socket.onmessage = (message) => {
        const event = JSON.parse(message.data);
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
