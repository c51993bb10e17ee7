#!/usr/bin/env bash
# A TPM device made of tpm2-tools only (independent of the Node SDK's TPM
# code), against the TPM at $TPM2TOOLS_TCTI (swtpm in the tests), working in
# directory $W:
#   tpm-device.sh keys            make (or find) the EK at 0x81010001 and the
#                                 SRK at 0x81000001; write ek.pub, srk.pub
#                                 (marshaled TPM2B_PUBLIC)
#   tpm-device.sh activate FILE   an authenticationKey blob (binary): activate
#                                 its credential with the EK, import its HMAC
#                                 key under the SRK, persist it at 0x81000100
#   tpm-device.sh sign TEXT       base64 HMAC-SHA256 of TEXT with that key
# The steps are the TPM commands every official client issues (tpm.md §5).
set -euo pipefail
: "${TPM2TOOLS_TCTI:?}" "${W:?}"
quiet() { "$@" >/dev/null; }
size_at() { od -An -tu1 -j "$2" -N2 "$1" | awk '{ print $1 * 256 + $2 }'; }
case "$1" in
keys)
	if ! tpm2_readpublic -c 0x81010001 -f tss -o "$W/ek.pub" >/dev/null 2>&1; then
		quiet tpm2_createek -G rsa -c 0x81010001 -u "$W/ek.pub" -f tss
	fi
	if ! tpm2_readpublic -c 0x81000001 -f tss -o "$W/srk.pub" >/dev/null 2>&1; then
		quiet tpm2_createprimary -C o -g sha256 -G rsa2048:null:aes128cfb -c "$W/srk.ctx" \
			-a 'restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda'
		quiet tpm2_evictcontrol -C o -c "$W/srk.ctx" 0x81000001
		quiet tpm2_readpublic -c 0x81000001 -f tss -o "$W/srk.pub"
	fi
	quiet tpm2_flushcontext -t
	;;
activate)
	# No resource manager in front of swtpm: free every slot first.
	quiet tpm2_flushcontext -t; quiet tpm2_flushcontext -l; quiet tpm2_flushcontext -s
	off=0
	for part in idobject secret private seed public data; do
		n=$(size_at "$2" $off)
		dd if="$2" of="$W/$part.bin" bs=1 skip=$off count=$((n + 2)) status=none
		off=$((off + n + 2))
	done
	# tpm2_activatecredential's file: magic, version, then the two structures.
	{ printf '\xba\xdc\xc0\xde\x00\x00\x00\x01'; cat "$W/idobject.bin" "$W/secret.bin"; } >"$W/credential.in"
	quiet tpm2_startauthsession --policy-session -S "$W/session.ctx"
	quiet tpm2_policysecret -S "$W/session.ctx" -c e
	quiet tpm2_activatecredential -c 0x81000001 -C 0x81010001 -i "$W/credential.in" \
		-o "$W/inner.key" -P "session:$W/session.ctx"
	quiet tpm2_flushcontext "$W/session.ctx"
	quiet tpm2_import -C 0x81000001 -u "$W/public.bin" -i "$W/private.bin" -s "$W/seed.bin" \
		-k "$W/inner.key" -r "$W/hmac.priv"
	quiet tpm2_load -C 0x81000001 -u "$W/public.bin" -r "$W/hmac.priv" -c "$W/hmac.ctx"
	tpm2_evictcontrol -C o -c 0x81000100 >/dev/null 2>&1 || true
	quiet tpm2_evictcontrol -C o -c "$W/hmac.ctx" 0x81000100
	quiet tpm2_flushcontext -t
	;;
sign)
	printf '%s' "$2" | tpm2_hmac -c 0x81000100 -g sha256 -o "$W/hmac.out" >/dev/null
	base64 -w0 "$W/hmac.out"
	;;
*)
	echo "usage: tpm-device.sh keys | activate FILE | sign TEXT" >&2
	exit 2
	;;
esac
