# Inspecting the session's objects: namesDS, levelsDS, lsDS, testObjExistsDS,
# messageDS.

#' Names of the elements of a list (aggregate); `xname.transmit` is its name.
namesDS <- function(xname.transmit) {
  nfilter.stringShort <- .nfilter("nfilter.stringShort")
  if (is.character(xname.transmit) && any(nchar(xname.transmit) > nfilter.stringShort)) {
    stop(paste0("FAILED: the character string denoting the argument <xname> is too long ",
                "and may be disclosive - please shorten"), call. = FALSE)
  }
  obj <- .get_object(xname.transmit, parent.frame(), "xname")
  if (!is.list(obj)) {
    stop(paste0("The input object is not of class <list>", class(obj)), call. = FALSE)
  }
  names(obj)
}

#' Levels of a factor (aggregate); `x` is the factor itself.
#'
#' Refused when the number of levels exceeds nfilter.levels.density times the
#' length of the factor. Blocked unless the privacy control level is
#' 'permissive' or 'banana'.
levelsDS <- function(x) {
  .checkPrivacyControlLevel(c("permissive", "banana"))
  density <- .nfilter("nfilter.levels.density")
  out <- levels(x)
  if (length(x) * density < length(out)) {
    stop("FAILED: Result length less than nfilter.levels.density of input length.",
         call. = FALSE)
  }
  list(Levels = out, ValidityMessage = "VALID ANALYSIS")
}

#' Objects in an environment of the session (aggregate).
#'
#' `env.to.search` is a search-list position, 1 (the default of ds.ls) being the
#' global environment where the session's symbols live. `search.filter` is a glob
#' in which the client transmits `*` as `_:A:_`.
lsDS <- function(search.filter = NULL, env.to.search) {
  if (missing(env.to.search) || is.null(env.to.search)) env.to.search <- 1L
  if (!is.numeric(env.to.search) || length(env.to.search) != 1L || is.na(env.to.search) ||
      env.to.search < 1 || env.to.search != round(env.to.search)) {
    stop("FAILED: env.to.search must be a positive integer (a search list position)",
         call. = FALSE)
  }
  env <- if (env.to.search == 1) globalenv() else as.environment(as.integer(env.to.search))
  if (is.null(search.filter)) {
    return(list(environment.searched = environmentName(env), objects.found = ls(envir = env)))
  }
  if (!is.character(search.filter) || length(search.filter) != 1L || is.na(search.filter)) {
    stop("FAILED: search.filter must be a character string", call. = FALSE)
  }
  nfilter.string <- .nfilter("nfilter.string")
  if (nchar(search.filter) > nfilter.string) {
    stop("FAILED: search.filter is longer than nfilter.string - please shorten", call. = FALSE)
  }
  glob <- gsub("_:A:_", "*", search.filter, fixed = TRUE)
  list(environment.searched = environmentName(env),
       objects.found = ls(envir = env, pattern = utils::glob2rx(glob)),
       search.filter.final = glob)
}

#' Whether an object exists and its class (aggregate).
testObjExistsDS <- function(test.obj.name = NULL) {
  if (!is.character(test.obj.name) || length(test.obj.name) != 1L || is.na(test.obj.name) ||
      !nzchar(test.obj.name)) {
    stop("FAILED: test.obj.name must be a character string", call. = FALSE)
  }
  env <- parent.frame()
  if (exists(test.obj.name, envir = env)) {
    return(list(test.obj.exists = TRUE,
                test.obj.class = class(get(test.obj.name, envir = env))))
  }
  list(test.obj.exists = FALSE, test.obj.class = NULL)
}

#' Whether an object holds a studysideMessage (aggregate).
messageDS <- function(message.object.name) {
  if (!is.character(message.object.name) || length(message.object.name) != 1L ||
      is.na(message.object.name) || !nzchar(message.object.name)) {
    stop("FAILED: message.object.name must be a character string", call. = FALSE)
  }
  env <- parent.frame()
  if (!exists(message.object.name, envir = env)) {
    return("Error: the object <message.object.name> does not exist in this datasource")
  }
  obj <- get(message.object.name, envir = env)
  if (!("list" %in% class(obj))) {
    return("ALL OK: there are no studysideMessage(s) on this datasource")
  }
  if (is.null(names(obj))) {
    return(paste0("Outcome object is a list without names. So a studysideMessage may be ",
                  "hidden. Please check output is OK"))
  }
  if ("studysideMessage" %in% names(obj)) {
    return("NOT ALL OK: there are studysideMessage(s) on this datasource")
  }
  "ALL OK: there are no studysideMessage(s) on this datasource"
}
