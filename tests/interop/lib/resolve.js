// Makes the test host names (FLEETHUB_HOSTS="name=ip,...") resolve to
// loopback addresses, the way /etc/hosts would, for every SDK in this
// process. Other names resolve as usual.
'use strict';
const dns = require('dns');

const map = new Map();
for (const pair of (process.env.FLEETHUB_HOSTS || '').split(',')) {
  const [name, ip] = pair.split('=');
  if (name && ip) map.set(name.trim().toLowerCase(), ip.trim());
}

const original = dns.lookup;
dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options;
    options = {};
  }
  const ip = typeof hostname === 'string' && map.get(hostname.toLowerCase());
  if (!ip) return original.call(dns, hostname, options, callback);
  const opts = typeof options === 'number' ? { family: options } : options || {};
  process.nextTick(() => {
    if (opts.all) callback(null, [{ address: ip, family: 4 }]);
    else callback(null, ip, 4);
  });
  return {};
};
