// hookbridge console: the live tail (an EventSource on the console's own
// stream) and a confirmation before destructive actions. Nothing else.
"use strict";
document.addEventListener("submit", (e) => {
  const question = e.target.dataset.confirm;
  if (question && !window.confirm(question)) e.preventDefault();
});
const list = document.getElementById("tail");
if (list) {
  const status = document.getElementById("tail-status");
  const source = new EventSource(list.dataset.stream);
  source.onopen = () => { status.textContent = "Connected: new events appear at the top."; };
  source.onerror = () => { status.textContent = "Disconnected; reconnecting…"; };
  source.addEventListener("event", (e) => {
    const event = JSON.parse(e.data);
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "/console/events/" + encodeURIComponent(event.id) + "?type=" + encodeURIComponent(event.type) + "&at=" + encodeURIComponent(event.published_at);
    link.textContent = event.id;
    item.append(event.published_at + "  " + event.type + "  " + (event.subject || "-") + "  ", link);
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
    document.getElementById("tail-count").textContent = String(Number(document.getElementById("tail-count").textContent) + 1);
  });
}
