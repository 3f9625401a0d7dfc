/* gan-audit serve: keyboard shortcuts of the labelling page (the page works without them:
   every answer is a button). A key pressed outside a text field presses the answer button
   whose data-key it is. */
"use strict";
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
  var target = event.target;
  var tag = target && target.tagName ? target.tagName.toLowerCase() : "";
  if (tag === "input" || tag === "textarea" || tag === "select" || (target && target.isContentEditable)) { return; }
  var form = document.getElementById("answer-form");
  if (!form || form.dataset.sent) { return; }
  var key = (event.key || "").toLowerCase();
  var buttons = form.querySelectorAll("button[data-key]");
  for (var i = 0; i < buttons.length; i++) {
    if (buttons[i].getAttribute("data-key") === key) {
      event.preventDefault();
      form.dataset.sent = "1";           /* one answer per page: no double submission */
      buttons[i].focus();
      buttons[i].click();
      return;
    }
  }
});
