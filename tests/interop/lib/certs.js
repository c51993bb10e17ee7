// Certificates for the X.509 tests, made with the openssl command line (an
// implementation independent of the server's): self-signed device
// certificates with any validity, CAs, intermediates and leaves.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

function ossl(...args) {
  return execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
}

function thumbprint(pem, alg) {
  return ossl('x509', '-in', pem, '-noout', '-fingerprint', `-${alg}`).trim().split('=')[1].replace(/:/g, '');
}

// A self-signed device certificate in dir with CN=cn, valid from start to
// end (openssl ca dates, YYYYMMDDHHMMSSZ) or for 30 days from now; returns
// { cert, key, sha1, sha256 } (PEM texts, upper-case hex).
function selfSigned(dir, name, cn, start, end) {
  const key = path.join(dir, `${name}.key`);
  const pem = path.join(dir, `${name}.pem`);
  if (!start) {
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-days', '30', '-subj', `/CN=${cn}`, '-keyout', key, '-out', pem);
  } else {
    // openssl ca signs with any dates; a minimal CA database in dir.
    const db = path.join(dir, `${name}-db`);
    fs.mkdirSync(db, { recursive: true });
    fs.writeFileSync(path.join(db, 'index.txt'), '');
    const conf = path.join(db, 'ca.cnf');
    fs.writeFileSync(conf, `[ca]\ndefault_ca=d\n[d]\ndatabase=${db}/index.txt\nnew_certs_dir=${db}\n` +
      'default_md=sha256\npolicy=p\nrand_serial=yes\n[p]\ncommonName=supplied\n');
    const csr = path.join(db, 'req.csr');
    ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-subj', `/CN=${cn}`, '-keyout', key, '-out', csr);
    ossl('ca', '-batch', '-config', conf, '-selfsign', '-keyfile', key, '-in', csr,
      '-startdate', start, '-enddate', end, '-out', pem, '-notext');
  }
  return { cert: fs.readFileSync(pem, 'utf8'), key: fs.readFileSync(key, 'utf8'),
    sha1: thumbprint(pem, 'sha1'), sha256: thumbprint(pem, 'sha256') };
}

// A CA (a root when signer is absent) or a leaf signed by signer, in dir;
// returns { pem, key } paths, the PEM texts text and keyText, and sha1.
function issue(dir, name, cn, signer, isCa) {
  const key = path.join(dir, `${name}.key`);
  const pem = path.join(dir, `${name}.pem`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, isCa ? 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n'
    : 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  if (!signer) {
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
      '-subj', `/CN=${cn}`, '-keyout', key, '-out', pem, '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  } else {
    const csr = path.join(dir, `${name}.csr`);
    ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${cn}`,
      '-keyout', key, '-out', csr);
    ossl('x509', '-req', '-in', csr, '-CA', signer.pem, '-CAkey', signer.key, '-CAcreateserial',
      '-days', '30', '-extfile', ext, '-out', pem);
  }
  return { pem, key, text: fs.readFileSync(pem, 'utf8'), keyText: fs.readFileSync(key, 'utf8'),
    sha1: thumbprint(pem, 'sha1') };
}

module.exports = { ossl, selfSigned, issue };
