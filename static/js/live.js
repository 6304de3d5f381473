// A WebSocket that reconnects by itself and hands each event to the handler named by
// its "type". onopen(socket) runs on every (re)connection, so a page can ask for what
// it missed.
const Live = {
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
        // 4404: not found or not allowed. Retrying cannot help.
        if (close.code === 4404 || closedForGood) return;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
    return { close() { closedForGood = true; } };
  },
};
