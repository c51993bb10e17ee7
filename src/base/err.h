/* Project-wide error codes: 0 is success, failures are small negative numbers
 * (libuv style). fh_strerror() gives a short English phrase for each. */
#ifndef FH_BASE_ERR_H
#define FH_BASE_ERR_H

enum {
	FH_OK = 0,
	FH_ENOMEM = -1,     /* allocation failed */
	FH_EINVAL = -2,     /* malformed or invalid input */
	FH_ENOTFOUND = -3,  /* no such record */
	FH_EEXIST = -4,     /* record already exists */
	FH_ETOOBIG = -5,    /* input exceeds a limit */
	FH_EPROTO = -6,     /* protocol violation */
	FH_EAUTH = -7,      /* authentication failed */
	FH_EPRECOND = -8,   /* precondition (etag) failed */
	FH_EIO = -9,        /* storage or system I/O failure */
	FH_EAGAIN = -10,    /* try again later (overload) */
	FH_EFORBIDDEN = -11,/* authenticated but not allowed */
	FH_ETIMEDOUT = -12, /* deadline passed */
	FH_EDISABLED = -13, /* the identity is disabled */
	FH_ENOSPC = -14,    /* storage full: nothing was written */
	FH_EUNAVAIL = -15,  /* the database cannot be reached: nothing was written */
};

const char *fh_strerror(int rc);

#endif
