#include "err.h"

const char *fh_strerror(int rc)
{
	switch (rc) {
	case FH_OK: return "success";
	case FH_ENOMEM: return "out of memory";
	case FH_EINVAL: return "invalid input";
	case FH_ENOTFOUND: return "not found";
	case FH_EEXIST: return "already exists";
	case FH_ETOOBIG: return "too large";
	case FH_EPROTO: return "protocol error";
	case FH_EAUTH: return "authentication failed";
	case FH_EPRECOND: return "precondition failed";
	case FH_EIO: return "I/O error";
	case FH_EAGAIN: return "busy, try again";
	case FH_EFORBIDDEN: return "forbidden";
	case FH_ETIMEDOUT: return "timed out";
	case FH_EDISABLED: return "disabled";
	case FH_ENOSPC: return "storage full";
	case FH_EUNAVAIL: return "database unavailable";
	}
	return "unknown error";
}
