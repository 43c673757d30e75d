#include "text/unicode_classes.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "core/error.h"

namespace otter::unicode {

namespace {

UChar32 as_uchar(char32_t c) { return static_cast<UChar32>(c); }

bool in_space_letter_number(char32_t c) { return is_regex_space(c) || is_letter(c) || is_number(c); }

}  // namespace

bool is_python_space(char32_t c) {
  const UCharDirection bidi = u_charDirection(as_uchar(c));
  return bidi == U_WHITE_SPACE_NEUTRAL || bidi == U_BLOCK_SEPARATOR || bidi == U_SEGMENT_SEPARATOR ||
         u_charType(as_uchar(c)) == U_SPACE_SEPARATOR;
}

bool is_regex_space(char32_t c) { return u_hasBinaryProperty(as_uchar(c), UCHAR_WHITE_SPACE); }

bool is_letter(char32_t c) { return (U_GET_GC_MASK(as_uchar(c)) & U_GC_L_MASK) != 0; }

bool is_number(char32_t c) { return (U_GET_GC_MASK(as_uchar(c)) & U_GC_N_MASK) != 0; }

bool is_other_symbol(char32_t c) {
  if (in_space_letter_number(c)) return false;
  for (const UChar32 variant : {u_tolower(as_uchar(c)), u_toupper(as_uchar(c)), u_totitle(as_uchar(c)),
                                u_foldCase(as_uchar(c), U_FOLD_CASE_DEFAULT)}) {
    if (in_space_letter_number(static_cast<char32_t>(variant))) return false;
  }
  return true;
}

char32_t fold_case(char32_t c) { return static_cast<char32_t>(u_foldCase(as_uchar(c), U_FOLD_CASE_DEFAULT)); }

std::u32string to_lower(std::u32string_view text) {
  if (text.empty()) return {};
  icu::UnicodeString utf16 =
      icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(text.data()), static_cast<int32_t>(text.size()));
  utf16.toLower(icu::Locale::getRoot());
  std::u32string out(static_cast<size_t>(utf16.countChar32()), U'\0');
  UErrorCode status = U_ZERO_ERROR;
  const int32_t written =
      utf16.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), status);
  OTTER_CHECK(U_SUCCESS(status), "ICU failed to lower-case a prompt: ", u_errorName(status));
  out.resize(static_cast<size_t>(written));
  return out;
}

}  // namespace otter::unicode
