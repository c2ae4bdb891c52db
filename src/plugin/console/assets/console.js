// kubectl atk console: the table's live updates, the Status menus and the dialogs.
// Served from the console itself (the CSP allows no inline script and no other origin).
'use strict';

(function () {
  const panel = document.querySelector('[data-scope]');
  if (!panel) {
    return;
  }
  const scope = panel.dataset.scope;
  const rowsBody = document.getElementById('token-rows');
  const actionError = document.getElementById('action-error');

  function show(element, message) {
    element.textContent = message || '';
    element.hidden = !message;
  }

  // A write to the console; the answer's `error` is the API server's message as it came.
  async function post(url, body) {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body || {}),
      credentials: 'same-origin',
      cache: 'no-store',
    });
    const text = await response.text();
    let data;
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = { error: text || response.statusText };
    }
    if (!response.ok && !data.error) {
      data.error = response.statusText;
    }
    return data;
  }

  // ---- the live table ----
  let refreshing = false;
  let pending = false;

  function openMenuToken() {
    const open = rowsBody.querySelector('.menu:not([hidden])');
    return open ? open.closest('tr').dataset.token : null;
  }

  async function refresh() {
    if (refreshing) {
      pending = true;
      return;
    }
    refreshing = true;
    try {
      const response = await fetch('/api' + scope + '/rows', { cache: 'no-store' });
      if (response.ok) {
        const keepOpen = openMenuToken();
        const focused = document.activeElement && rowsBody.contains(document.activeElement)
          ? document.activeElement.closest('tr').dataset.token : null;
        rowsBody.innerHTML = await response.text();
        if (keepOpen) {
          const row = rowsBody.querySelector('tr[data-token="' + CSS.escape(keepOpen) + '"]');
          if (row) {
            openMenu(row.querySelector('.status-button'), false);
          }
        } else if (focused) {
          const row = rowsBody.querySelector('tr[data-token="' + CSS.escape(focused) + '"]');
          if (row) {
            row.querySelector('.status-button').focus();
          }
        }
      }
    } finally {
      refreshing = false;
      if (pending) {
        pending = false;
        refresh();
      }
    }
  }

  const events = new EventSource('/api' + scope + '/events');
  events.addEventListener('change', refresh);
  // Relative times ("in 12 days") move on even when nothing changes.
  setInterval(refresh, 60000);

  // ---- the Status menu ----
  function closeMenus() {
    rowsBody.querySelectorAll('.menu').forEach(function (menu) {
      menu.hidden = true;
    });
    rowsBody.querySelectorAll('.status-button').forEach(function (button) {
      button.setAttribute('aria-expanded', 'false');
    });
  }

  function openMenu(button, focusFirst) {
    closeMenus();
    const menu = document.getElementById(button.getAttribute('aria-controls'));
    menu.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    if (focusFirst) {
      const first = menu.querySelector('[role="menuitem"]');
      if (first) {
        first.focus();
      }
    }
  }

  rowsBody.addEventListener('click', function (event) {
    const button = event.target.closest('.status-button');
    if (button) {
      if (button.getAttribute('aria-expanded') === 'true') {
        closeMenus();
      } else {
        openMenu(button, event.detail === 0);
      }
      return;
    }
    const item = event.target.closest('[data-action]');
    if (item && !item.disabled) {
      closeMenus();
      runAction(item.dataset.action, item.dataset.namespace, item.dataset.name);
    }
  });

  rowsBody.addEventListener('keydown', function (event) {
    const menu = event.target.closest('.menu');
    if (event.key === 'Escape' && menu) {
      const button = menu.parentElement.querySelector('.status-button');
      closeMenus();
      button.focus();
    } else if ((event.key === 'ArrowDown' || event.key === 'ArrowUp') && menu) {
      const items = Array.from(menu.querySelectorAll('[role="menuitem"]'));
      const at = items.indexOf(document.activeElement);
      const next = event.key === 'ArrowDown' ? at + 1 : at - 1;
      items[(next + items.length) % items.length].focus();
      event.preventDefault();
    }
  });

  document.addEventListener('click', function (event) {
    if (!event.target.closest('.status')) {
      closeMenus();
    }
  });

  // ---- actions ----
  const confirmDialog = document.getElementById('confirm-dialog');
  const confirmError = document.getElementById('confirm-error');
  let toDelete = null;

  async function runAction(action, namespace, name) {
    show(actionError, '');
    if (action === 'delete') {
      toDelete = { namespace: namespace, name: name };
      document.getElementById('confirm-text').textContent = 'Delete token "' + name + '" in namespace ' +
        namespace + '? It stops working at once and is deleted permanently, with its Technical User and ' +
        'Secret. It cannot be recovered.';
      show(confirmError, '');
      confirmDialog.showModal();
      return;
    }
    const answer = await post('/api/tokens/' + encodeURIComponent(namespace) + '/' + encodeURIComponent(name) + '/' + action);
    if (answer.error) {
      show(actionError, answer.error);
    }
    refresh();
  }

  document.getElementById('confirm-button').addEventListener('click', async function () {
    if (!toDelete) {
      return;
    }
    const answer = await post('/api/tokens/' + encodeURIComponent(toDelete.namespace) + '/' +
      encodeURIComponent(toDelete.name) + '/delete');
    if (answer.error) {
      show(confirmError, answer.error);
      return;
    }
    toDelete = null;
    confirmDialog.close();
    refresh();
  });

  document.querySelectorAll('[data-close]').forEach(function (button) {
    button.addEventListener('click', function () {
      button.closest('dialog').close();
    });
  });

  // ---- Create Access Token ----
  const createDialog = document.getElementById('create-dialog');
  const createForm = document.getElementById('create-form');
  const createError = document.getElementById('create-error');
  const createStatus = document.getElementById('create-status');
  const createSubmit = document.getElementById('create-submit');
  const copyDialog = document.getElementById('copy-dialog');
  const tokenValue = document.getElementById('token-value');
  const copyStatus = document.getElementById('copy-status');

  document.getElementById('create-open').addEventListener('click', function () {
    createForm.reset();
    show(createError, '');
    createStatus.textContent = '';
    createDialog.showModal();
    document.getElementById('token-name').focus();
  });

  createForm.addEventListener('submit', async function (event) {
    event.preventDefault();
    show(createError, '');
    const body = {
      name: document.getElementById('token-name').value.trim(),
      namespace: document.getElementById('token-namespace').value,
      expiresOn: document.getElementById('token-expires').value,
      admin: document.getElementById('token-admin').checked,
    };
    createSubmit.disabled = true;
    createStatus.textContent = 'Creating the token and waiting until it is Active…';
    let answer;
    try {
      answer = await post('/api' + scope + '/tokens', body);
    } finally {
      createSubmit.disabled = false;
      createStatus.textContent = '';
    }
    if (answer.error) {
      show(createError, answer.error);
      return;
    }
    createDialog.close();
    tokenValue.value = answer.value;
    document.getElementById('copy-where').textContent = 'Token "' + answer.name + '" is Active. Its value is also ' +
      'kept in Secret "' + answer.name + '" in namespace ' + answer.namespace + ', for the workloads that use it.';
    copyStatus.textContent = '';
    copyDialog.showModal();
    tokenValue.select();
    refresh();
  });

  document.getElementById('copy-button').addEventListener('click', async function () {
    try {
      await navigator.clipboard.writeText(tokenValue.value);
    } catch (e) {
      tokenValue.select();
      document.execCommand('copy');
    }
    copyStatus.textContent = 'Copied to the clipboard.';
  });

  // The value is shown once: gone from the page when the dialog closes or the page goes.
  copyDialog.addEventListener('close', function () {
    tokenValue.value = '';
  });
  window.addEventListener('pagehide', function () {
    tokenValue.value = '';
  });
})();
