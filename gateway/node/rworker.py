"""The R side of a DataSHIELD session: an embedded R (rpy2) serving one session's commands.

`RRuntime` is set up once in the zygote (R started, DataSHIELD packages loaded); every
worker is a fork of it, so a login gets a ready R in milliseconds. `serve()` is the loop
a forked worker runs: it reads one request at a time from its socket, evaluates it in
R's global environment (where Opal, Rock and Armadillo keep a session's symbols, and
where dsBase functions look for them), and answers.

Only this module and the zygote import rpy2; the web process never embeds R.
"""

import contextlib
import ctypes
import os
import resource
import signal
import socket

from gateway.node.audit_outcomes import R_REFUSAL, AggregateAnswer, returned_refusal
from gateway.node.rchannel import ChannelClosed, recv_msg, send_msg

# R helpers live in their own environment so that the session's `ls()` never shows them.
_R_HELPERS = r"""
local({
  helpers <- new.env(parent = baseenv())

  format_error <- function(e) {
    call <- conditionCall(e)
    msg <- conditionMessage(e)
    if (is.null(call)) paste0("Error : ", msg)
    else paste0("Error in ", paste(deparse(call, nlines = 1L), collapse = " "), " : ", msg)
  }

  # Evaluate parsed, checked code; never let an R error or an interrupt escape to C.
  helpers$evaluate <- function(code) {
    tryCatch(
      list(TRUE, eval(parse(text = code, keep.source = FALSE), envir = globalenv())),
      error = function(e) list(FALSE, format_error(e)),
      interrupt = function(e) list(FALSE, "interrupted")
    )
  }
  helpers$evaluate_assign <- function(symbol, code) {
    r <- helpers$evaluate(code)
    if (isTRUE(r[[1]])) assign(symbol, r[[2]], envir = globalenv())
    list(r[[1]], if (isTRUE(r[[1]])) NULL else r[[2]])
  }
  helpers$to_rds <- function(value) serialize(value, NULL)
  # Opal answers aggregate results as JSON exactly as its R server (Rock) makes it:
  # jsonlite with unboxed scalars and full precision, serializeJSON for what toJSON
  # cannot represent, and an empty object as null.
  helpers$to_json <- function(value) {
    json <- tryCatch(
      as.character(jsonlite::toJSON(value, auto_unbox = TRUE, null = "null", na = "null",
                                    digits = NA)),
      # Rock falls back to serializeJSON with its default 8 digits; full precision keeps
      # the same shape and spares federated models (glm information matrices) rounding.
      error = function(e) as.character(jsonlite::serializeJSON(value, digits = NA)))
    if (identical(json, "{}")) "null" else json
  }
  helpers$set_options <- function(values) {
    # values: named character vector of R literals, from installed packages and the
    # node config (both under the data steward's control, never from a client).
    parsed <- lapply(values, function(v) eval(parse(text = v, keep.source = FALSE),
                                             envir = baseenv()))
    do.call(options, parsed)
    invisible(TRUE)
  }
  helpers$datashield_packages <- function() {
    fields <- c("AggregateMethods", "AssignMethods", "Options")
    ip <- utils::installed.packages(fields = fields)
    out <- list()
    for (i in seq_len(nrow(ip))) {
      pkg <- ip[i, "Package"]
      vals <- ip[i, fields]
      ds_file <- file.path(ip[i, "LibPath"], pkg, "DATASHIELD")
      if (file.exists(ds_file)) {
        dcf <- tryCatch(read.dcf(ds_file), error = function(e) NULL)
        if (!is.null(dcf)) for (f in intersect(fields, colnames(dcf))) vals[[f]] <- dcf[1, f]
      }
      if (all(is.na(vals))) next
      if (!is.null(out[[pkg]])) next  # first library on .libPaths() wins, as library() does
      out[[pkg]] <- list(name = unname(pkg), version = unname(ip[i, "Version"]),
                         aggregate = unname(vals[["AggregateMethods"]]),
                         assign = unname(vals[["AssignMethods"]]),
                         options = unname(vals[["Options"]]))
    }
    unname(out)
  }
  helpers$save_workspace <- function(path) {
    save(list = ls(globalenv(), all.names = TRUE), file = path, envir = globalenv())
    invisible(TRUE)
  }
  helpers$load_workspace <- function(path) {
    load(path, envir = globalenv())
    invisible(TRUE)
  }
  helpers
})
"""

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, so no R is ever orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RError(Exception):
    """R evaluated the command and signalled an error (the session itself is fine)."""


class RRuntime:
    """An embedded R with our helpers and the DataSHIELD packages loaded."""

    def __init__(self, r_lib: str | None = None):
        # One thread per worker: forked children must not inherit BLAS or OpenMP pools.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        if r_lib:
            os.environ["R_LIBS_USER"] = r_lib
        import rpy2.rinterface as ri
        from rpy2.rinterface_lib import callbacks, openrlib

        ri.initr()
        # R's console output would go to the gateway's stdout; a session has no console.
        callbacks.consolewrite_print = lambda _s: None
        callbacks.consolewrite_warnerror = lambda _s: None
        callbacks.showmessage = lambda _s: None
        self.ri = ri
        self.rlib = openrlib.rlib
        self.ffi = openrlib.ffi
        if r_lib:
            # Several libraries may be given, separated like PATH; the first wins.
            paths = [p for p in r_lib.split(os.pathsep) if p]
            self._call(ri.baseenv.find(".libPaths"), ri.StrSexpVector(paths))
        self.helpers = ri.baseenv.find("eval")(ri.parse(_R_HELPERS), ri.globalenv)
        # Whether an aggregate's value is a disclosure filter's refusal (for the audit).
        self.refusal_text = ri.baseenv.find("eval")(ri.parse(R_REFUSAL), ri.baseenv)
        self.packages = self._discover_packages()
        self._preload([p["name"] for p in self.packages] + ["jsonlite"])
        # Pre-import what a load-table needs so that forked workers do not pay for it.
        # pyarrow imports pandas the first time it converts Python objects (~150 ms and
        # hundreds of modules); once here, every fork shares it instead of each importing it.
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from gateway.node import datasources, r_convert  # noqa: F401

    def _call(self, fun, *args):
        return fun(*args)

    def _helper(self, name):
        return self.helpers.find(name)

    def _discover_packages(self) -> list[dict]:
        found = self._helper("datashield_packages")()
        packages = []
        for entry in found:
            record = {}
            for key in ("name", "version", "aggregate", "assign", "options"):
                record[key] = _as_optional_str(_list_item(entry, key))
            packages.append(record)
        return packages

    def _preload(self, names: list[str]) -> None:
        load = self.ri.baseenv.find("requireNamespace")
        for name in names:
            with contextlib.suppress(Exception):
                load(self.ri.StrSexpVector([name]), quietly=self.ri.BoolSexpVector([True]))

    # -- operations (each runs in a forked worker) --------------------------------------

    def _evaluate(self, code: str):
        self.rlib.R_interrupts_pending = 0
        result = self._helper("evaluate")(self.ri.StrSexpVector([code]))
        ok = bool(result[0][0])
        if not ok:
            raise RError(str(result[1][0]))
        return result[1]

    def op_init(self, options: dict[str, str], memory_mb: int | None) -> dict:
        if options:
            values = self.ri.StrSexpVector(list(options.values()))
            values.names = self.ri.StrSexpVector(list(options.keys()))
            self._helper("set_options")(values)
        if memory_mb:
            # Address space is what R's allocator hits first: a bigger vector than the
            # limit makes R signal "cannot allocate vector", which fails one command.
            current = _vm_size_bytes()
            limit = current + memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        return {"pid": os.getpid()}

    def op_ping(self) -> str:
        return "pong"

    def op_warm(self) -> None:
        """Pay a fresh fork's first-use costs before a login claims this worker.

        R's first garbage collection in a fork writes to every page of the heap it shares
        with the zygote (copy-on-write), and Arrow starts its thread pool on first use;
        both would otherwise land on the session's first load-table. A tiny table is
        loaded the way load-table loads one (Parquet decoded column by column, converted
        into R, nothing assigned), so the code and kernels it uses are paged in too.
        """
        import tempfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        from gateway.node.datasources import TableRef, TableSource, read_columns
        from gateway.node.r_convert import arrow_to_r_dataframe, columns_to_r_dataframe

        self.ri.baseenv.find("gc")()
        table = pa.table(
            {
                "x": pa.array([1.0, None]),
                "n": pa.array([1, None], pa.int32()),
                "b": pa.array([True, None]),
                "s": pa.array(["a", None]),
                "d": pa.array(["u", "v"]).dictionary_encode(),
            }
        )
        arrow_to_r_dataframe(table)
        # Only an optimisation: a node whose temporary directory is not writable skips it.
        with contextlib.suppress(OSError), tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "warm.parquet")
            pq.write_table(table, path)
            stream = read_columns(TableSource(TableRef("warm", "warm", "warm"), "parquet", path))
            columns_to_r_dataframe(stream.names, stream.columns, stream.num_rows)

    def op_assign_table(self, symbol: str, source, variables: list[str] | None) -> None:
        from gateway.node.datasources import read_columns
        from gateway.node.r_convert import columns_to_r_dataframe

        stream = read_columns(source, variables)
        frame = columns_to_r_dataframe(stream.names, stream.columns, stream.num_rows)
        # R's assign() binds the frame itself; rpy2's `globalenv[symbol] = frame` would
        # duplicate the whole data frame first.
        self.ri.baseenv.find("assign")(
            self.ri.StrSexpVector([symbol]), frame, envir=self.ri.globalenv
        )

    def op_assign_expr(self, symbol: str, code: str) -> None:
        self.rlib.R_interrupts_pending = 0
        result = self._helper("evaluate_assign")(
            self.ri.StrSexpVector([symbol]), self.ri.StrSexpVector([code])
        )
        if not bool(result[0][0]):
            raise RError(str(result[1][0]))

    def op_aggregate(self, code: str, fmt: str) -> AggregateAnswer:
        value = self._evaluate(code)
        candidate = self.refusal_text(value)[0]
        refusal = returned_refusal(None if candidate is self.ri.NA_Character else str(candidate))
        if fmt == "json":
            return AggregateAnswer(str(self._helper("to_json")(value)[0]), refusal)
        raw = self._helper("to_rds")(value)
        data = bytes(self.ffi.buffer(self.rlib.RAW(raw.__sexp__._cdata), len(raw)))
        return AggregateAnswer(data, refusal)

    def op_ls(self) -> list[str]:
        names = self.ri.baseenv.find("ls")(self.ri.globalenv)
        return [str(n) for n in names]

    def op_rm(self, symbol: str) -> None:
        self.ri.baseenv.find("rm")(list=self.ri.StrSexpVector([symbol]), envir=self.ri.globalenv)

    def op_save_workspace(self, path: str) -> None:
        self._helper("save_workspace")(self.ri.StrSexpVector([path]))

    def op_load_workspace(self, path: str) -> None:
        self._helper("load_workspace")(self.ri.StrSexpVector([path]))


def _list_item(rlist, key):
    names = list(rlist.names)
    return rlist[names.index(key)]


def _as_optional_str(value) -> str | None:
    if value is None or len(value) == 0:
        return None
    item = value[0]
    # rpy2 gives R's NA_character_ as a singleton whose str() is "NA".
    if item is None or type(item).__name__.startswith("NA"):
        return None
    return str(item)


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def serve(sock: socket.socket, runtime: RRuntime) -> None:
    """Run one session's commands until the web process closes the socket."""
    busy = {"evaluating": False}

    def interrupt(_signum, _frame):
        # Python runs this handler inside R's event-processing callback, so setting the
        # flag makes R stop the running evaluation with an `interrupt` condition.
        if busy["evaluating"]:
            runtime.rlib.R_interrupts_pending = 1

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            request = recv_msg(sock)
        except (ChannelClosed, OSError):
            return
        op = request.pop("op")
        handler = getattr(runtime, f"op_{op}", None)
        busy["evaluating"] = True
        try:
            if handler is None:
                raise ValueError(f"unknown operation {op!r}")
            reply = {"ok": True, "value": handler(**request)}
        except RError as err:
            reply = {"ok": False, "kind": "r", "message": str(err)}
        except MemoryError:
            reply = {"ok": False, "kind": "r", "message": "Error : cannot allocate memory"}
        except Exception as err:
            kind = "bad_request" if getattr(err, "status", None) == 400 else "internal"
            reply = {"ok": False, "kind": kind, "message": getattr(err, "message", str(err))}
        finally:
            busy["evaluating"] = False
        try:
            send_msg(sock, reply)
        except OSError:
            return
