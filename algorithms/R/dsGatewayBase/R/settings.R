# Disclosure settings: how every function of the package reads its thresholds.

# Names of the settings listDisclosureSettingsDS() reports (after the privacy
# control level), in dsBase's order.
.dsgb_filter_names <- c(
  "nfilter.tab", "nfilter.subset", "nfilter.glm", "nfilter.string",
  "nfilter.stringShort", "nfilter.kNN", "nfilter.levels.density",
  "nfilter.levels.max", "nfilter.noise"
)

#' Read one disclosure setting the way dsBase does.
#'
#' A site override under the plain name (e.g. option `nfilter.tab`) wins over the
#' package default under the `default.` prefixed name (`default.nfilter.tab`).
#' @param name setting name without prefix, e.g. "nfilter.tab".
#' @param numeric coerce the value with as.numeric().
#' @return the value, or NULL if neither option is set.
getDisclosureSetting <- function(name, numeric = TRUE) {
  if (!is.character(name) || length(name) != 1L || is.na(name)) {
    stop("name must be a single character string", call. = FALSE)
  }
  value <- getOption(name)
  if (is.null(value)) value <- getOption(paste0("default.", name))
  if (is.null(value) && name %in% names(.dsgb_default_options)) {
    value <- .dsgb_default_options[[name]]
  }
  if (is.null(value) && paste0("default.", name) %in% names(.dsgb_default_options)) {
    value <- .dsgb_default_options[[paste0("default.", name)]]
  }
  if (numeric && !is.null(value)) {
    value <- suppressWarnings(as.numeric(value))
    if (length(value) != 1L || is.na(value)) {
      stop(paste0("FAILED: the disclosure setting ", name, " is not a number"), call. = FALSE)
    }
  }
  value
}

# A numeric threshold for use inside the package.
.nfilter <- function(name) getDisclosureSetting(name, numeric = TRUE)

#' The disclosure settings in force (aggregate).
#'
#' Same list, names and order as dsBase::listDisclosureSettingsDS().
listDisclosureSettingsDS <- function() {
  out <- list(datashield.privacyControlLevel =
                getDisclosureSetting("datashield.privacyControlLevel", numeric = FALSE))
  for (nm in .dsgb_filter_names) {
    value <- getDisclosureSetting(nm, numeric = FALSE)
    # keep list slots even when a value is missing (list(a = NULL) semantics)
    out[nm] <- list(value)
  }
  out["nfilter.privacy.old"] <- list(getOption("datashield.privacyLevel"))
  out
}

# Refuse unless the privacy control level is one of `levels`
# (dsBase::checkPermissivePrivacyControlLevel).
.checkPrivacyControlLevel <- function(levels = c("permissive", "banana")) {
  level <- getDisclosureSetting("datashield.privacyControlLevel", numeric = FALSE)
  if (is.null(level) || !any(level %in% levels)) {
    stop("BLOCKED: The server is running in 'non-permissive' mode which has caused this method to be blocked",
         call. = FALSE)
  }
  invisible()
}
